"""Pure parts of the CLI: parsing what people type and spelling what they read (tables,
``-o json|yaml`` records, YAML streams). No I/O, so every rule is unit-tested."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from ferry.adapters.postgres import AuditRecord, Revision
from ferry.cli.errors import CliError
from ferry.history.documents import format_time, to_yaml

__all__ = [
    "audit_records",
    "audit_table",
    "dump_documents",
    "format_time",
    "history_table",
    "parse_ref",
    "parse_time",
    "revision_record",
    "short_hash",
    "table",
    "to_yaml",
]

# --------------------------------------------------------------------------------- parsing


def parse_ref(text: str) -> tuple[str, str]:
    """``NS/NAME`` → (namespace, name). History is per namespaced object, so both are needed."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise CliError(f'"{text}" is not NAMESPACE/NAME')
    return namespace, name


_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (``2025-03-01T12:00:00Z``; no zone means UTC) or an age such as ``90m``,
    ``2h`` or ``7d`` (that long before ``now``), because both are what people type."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f'"{text}" is neither an ISO 8601 time (2025-03-01T12:00:00Z) nor an age (2h, 7d)'
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def short_hash(value: str) -> str:
    algorithm, _, digest = value.partition(":")
    return f"{algorithm}:{digest[:12]}" if digest else value[:12]


# --------------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by three spaces, like ``kubectl get``."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def revision_record(revision: Revision) -> dict[str, Any]:
    """One revision as ``-o json|yaml`` shows it: metadata and the resolved content."""
    return {
        "kind": revision.kind,
        "namespace": revision.namespace,
        "name": revision.name,
        "revision": revision.revision,
        "createdAt": format_time(revision.created_at),
        "changedBy": revision.changed_by,
        "reason": revision.reason,
        "hash": revision.hash,
        "uid": revision.uid,
        "content": revision.content,
    }


def history_table(revisions: Sequence[Revision]) -> str:
    return table(
        ("REVISION", "TIME", "USER", "REASON", "HASH"),
        (
            (
                r.revision,
                format_time(r.created_at),
                r.changed_by or "-",
                r.reason or "-",
                short_hash(r.hash),
            )
            for r in revisions
        ),
    )


def audit_records(records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    """The audit trail as ``-o json|yaml`` shows it."""
    return [
        {
            "at": format_time(r.at),
            "action": r.action,
            "kind": r.kind,
            "namespace": r.namespace,
            "name": r.name,
            "user": r.username,
            "revision": r.revision,
            "details": r.details,
        }
        for r in records
    ]


def audit_table(records: Sequence[AuditRecord]) -> str:
    return table(
        ("TIME", "ACTION", "OBJECT", "USER", "REVISION", "DETAILS"),
        (
            (
                format_time(r.at),
                r.action,
                f"{r.kind} {r.namespace}/{r.name}",
                r.username or "-",
                r.revision if r.revision is not None else "-",
                _details(r.details),
            )
            for r in records
        ),
    )


def _details(details: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in details.items() if v is not None and k != "hash"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"


def dump_documents(documents: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(
        [dict(d) for d in documents], sort_keys=False, allow_unicode=True, default_flow_style=False
    )
