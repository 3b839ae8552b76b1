"""Pure parts of diff, export and restore: contents spelled for diffs, and the manifests an
export writes and a restore accepts. No I/O, so every rule is unit-tested without a cluster."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from ferry.adapters.postgres import Revision
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.entry import references
from ferry.history.errors import HistoryError

#: Document order of an export: what an object refers to is applied before it, so an admission
#: webhook that checks references (schemaRef, inherits) accepts each document in turn.
KIND_ORDER = (kinds.CONFIG_SCHEMA.kind, kinds.CONFIG_ENTRY.kind, kinds.FEATURE_FLAG.kind)


def format_time(value: dt.datetime) -> str:
    """UTC, microseconds kept: ``ferry export --at`` accepts exactly what ``history`` prints."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=True, allow_unicode=True, default_flow_style=False)


def render_diff(old: Any, new: Any, old_label: str, new_label: str) -> str:
    """A unified diff of two contents, each spelled as sorted YAML so that only real changes
    show (key order and JSON whitespace never do). Empty when the contents are equal."""
    lines = difflib.unified_diff(
        to_yaml(old).splitlines(),
        to_yaml(new).splitlines(),
        fromfile=old_label,
        tofile=new_label,
        lineterm="",
    )
    return "\n".join(lines)


def export_documents(revisions: Iterable[Revision], at: dt.datetime | None) -> list[dict[str, Any]]:
    """The manifests that recreate the state ``revisions`` describe (one per object).

    Each carries exactly the recorded spec (the input that produced the content, with Vault
    references but never secret values) and a change-reason annotation, so the revisions a
    restore creates say where they came from. Documents are ordered so references resolve:
    schemas, then entries with their bases first, then flags.
    """
    moment = format_time(at) if at is not None else "export time"
    by_kind: dict[str, list[Revision]] = {}
    for revision in revisions:
        by_kind.setdefault(revision.kind, []).append(revision)
    ordered: list[Revision] = []
    for kind in sorted(by_kind, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 9, k)):
        group = sorted(by_kind[kind], key=lambda r: (r.namespace, r.name))
        ordered += _bases_first(group) if kind == kinds.CONFIG_ENTRY.kind else group
    return [
        {
            "apiVersion": kinds.API_VERSION,
            "kind": r.kind,
            "metadata": {
                "name": r.name,
                "namespace": r.namespace,
                "annotations": {
                    L.CHANGE_REASON: f"restore of revision {r.revision} (state at {moment})"
                },
            },
            "spec": r.spec,
        }
        for r in ordered
    ]


def _bases_first(entries: list[Revision]) -> list[Revision]:
    by_key = {(r.namespace, r.name): r for r in entries}
    done: set[tuple[str, str]] = set()
    out: list[Revision] = []

    def visit(key: tuple[str, str], path: tuple[tuple[str, str], ...]) -> None:
        if key in done or key in path or key not in by_key:
            return  # a cycle is the webhook's to refuse; the export keeps going
        revision = by_key[key]
        spec = revision.spec if isinstance(revision.spec, Mapping) else {}
        for base in references(spec)[1]:
            visit((key[0], base), (*path, key))
        done.add(key)
        out.append(revision)

    for key in by_key:
        visit(key, ())
    return out


def restorable(doc: Any, number: int) -> dict[str, Any]:
    """Keep what a manifest sets; drop server-owned fields (uid, resourceVersion, status…)."""
    if not isinstance(doc, Mapping):
        raise HistoryError(f"document {number} is not a mapping")
    kind = doc.get("kind")
    metadata = doc.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    if kind not in KIND_ORDER:
        raise HistoryError(f'document {number}: kind "{kind}" is not a Ferry kind')
    if not meta.get("name") or not meta.get("namespace"):
        raise HistoryError(f"document {number} ({kind}): metadata.name and namespace are needed")
    kept_meta = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)}
    return {
        "apiVersion": doc.get("apiVersion", kinds.API_VERSION),
        "kind": kind,
        "metadata": kept_meta,
        "spec": doc.get("spec") or {},
    }
