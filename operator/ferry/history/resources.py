"""The history API's resources, as data: ``history.ferry.dev/v1alpha1`` (decision 0021).

Pure: what a ``ConfigRevision`` and an ``AuditEvent`` look like, both ways (the server builds
them from rows; the CLI turns them back into rows), their names, their Table columns (what
``kubectl get`` prints), discovery documents, and the parsing of field and label selectors.
The server (``ferry.historyapi``) and the CLI's client (``ferry.history.service``) share it, so
the two cannot disagree on a field.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.adapters.postgres.history import AuditKey
from ferry.adapters.postgres.records import AuditRecord, Revision
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.names import is_object_name

GROUP = "history.ferry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
REVISIONS = "configrevisions"
AUDIT_EVENTS = "auditevents"

#: Kinds with history, lower-cased as the first part of a ConfigRevision's name.
_KIND_PREFIX = {
    k.kind.lower(): k.kind for k in (kinds.CONFIG_ENTRY, kinds.FEATURE_FLAG, kinds.CONFIG_SCHEMA)
}
_UID_NAMESPACE = uuid.UUID("6f1d3a52-5a8e-4a8e-9b57-3c0e4f6b9a10")

#: The largest values of PostgreSQL's ``integer`` (revision numbers) and ``bigint`` (audit row
#: ids): a larger number names no row, and sent to PostgreSQL it would be an error.
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


def parse_number(text: str, maximum: int) -> int | None:
    """A non-negative decimal written in ASCII digits, at most ``maximum``; None otherwise.

    Neither ``str.isdigit`` nor ``int`` alone will do: "²" is a digit to the first and not a
    number to the second, "٣" is 3 to both, and ``int`` also takes "+1", " 1" and "1_0"."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(maximum)):  # also keeps int() off very long strings
        return None
    value = int(significant)
    return value if value <= maximum else None


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    kind: str
    short_names: tuple[str, ...]
    description: str

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{GROUP}"


RESOURCES = {
    REVISIONS: Resource(
        REVISIONS,
        "configrevision",
        "ConfigRevision",
        ("crev",),
        "A recorded revision of a ConfigEntry, FeatureFlag or ConfigSchema.",
    ),
    AUDIT_EVENTS: Resource(
        AUDIT_EVENTS,
        "auditevent",
        "AuditEvent",
        ("fae",),
        "One row of Ferry's audit trail.",
    ),
}


# ------------------------------------------------------------------------------- names


def revision_name(kind: str, name: str, revision: int) -> str:
    """``configentry.payments.3``: kind, object and revision (a schema and an entry may share a
    name). Object names are DNS subdomains, so the result is one too."""
    return f"{kind.lower()}.{name}.{revision}"


def parse_revision_name(text: str) -> tuple[str, str, int] | None:
    """(kind, object name, revision) of a ConfigRevision's name; None if it is not one."""
    prefix, _, rest = text.partition(".")
    name, _, number = rest.rpartition(".")
    kind = _KIND_PREFIX.get(prefix)
    revision = parse_number(number, INT4_MAX)
    if kind is None or not is_object_name(name) or revision is None:
        return None
    return kind, name, revision


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 time (``Z`` or an offset); raises ValueError."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return parsed


# ------------------------------------------------------------------------------- objects


def revision_object(r: Revision) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ConfigRevision",
        "metadata": {
            "name": revision_name(r.kind, r.name, r.revision),
            "namespace": r.namespace,
            "uid": str(uuid.uuid5(_UID_NAMESPACE, f"revision/{r.uid}/{r.revision}")),
            "creationTimestamp": _time(r.created_at),
            "labels": {L.ENTRY_NAME: r.name, L.REVISION: str(r.revision)},
        },
        "spec": {
            "kind": r.kind,
            "entry": r.name,
            "entryUID": r.uid,
            "revision": r.revision,
            "hash": r.hash,
            "changedBy": r.changed_by,
            "reason": r.reason,
            "createdAt": format_time(r.created_at),
            "content": r.content,
            "recordedSpec": r.spec,
        },
    }


def revision_from_object(obj: Mapping[str, Any]) -> Revision:
    spec = obj["spec"]
    return Revision(
        kind=spec["kind"],
        namespace=obj["metadata"]["namespace"],
        name=spec["entry"],
        uid=spec["entryUID"],
        revision=int(spec["revision"]),
        hash=spec["hash"],
        content=spec.get("content"),
        spec=spec.get("recordedSpec"),
        changed_by=spec.get("changedBy"),
        reason=spec.get("reason"),
        created_at=parse_time(spec["createdAt"]),
    )


def audit_object(a: AuditRecord) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AuditEvent",
        "metadata": {
            "name": str(a.id),
            "namespace": a.namespace,
            "uid": str(uuid.uuid5(_UID_NAMESPACE, f"audit/{a.id}")),
            "creationTimestamp": _time(a.at),
            "labels": {L.ENTRY_NAME: a.name},
        },
        "spec": {
            "at": format_time(a.at),
            "action": a.action,
            "kind": a.kind,
            "entry": a.name,
            "entryUID": a.uid,
            "user": a.username,
            "revision": a.revision,
            "details": a.details,
        },
    }


def audit_from_object(obj: Mapping[str, Any]) -> AuditRecord:
    spec = obj["spec"]
    return AuditRecord(
        id=int(obj["metadata"]["name"]),
        at=parse_time(spec["at"]),
        action=spec["action"],
        kind=spec["kind"],
        namespace=obj["metadata"]["namespace"],
        name=spec["entry"],
        uid=spec.get("entryUID"),
        username=spec.get("user"),
        revision=spec.get("revision"),
        details=dict(spec.get("details") or {}),
    )


def list_object(
    resource: Resource, items: list[dict[str, Any]], next_page: str | None = None
) -> dict[str, Any]:
    return list_head(resource, next_page) | {"items": items}


def list_head(resource: Resource, next_page: str | None = None) -> dict[str, Any]:
    """A list without its ``items``."""
    return {
        "apiVersion": API_VERSION,
        "kind": f"{resource.kind}List",
        "metadata": _list_metadata(next_page),
    }


def _list_metadata(next_page: str | None) -> dict[str, Any]:
    return {"resourceVersion": ""} | ({"continue": next_page} if next_page else {})


# ``continue`` tokens. A revision list's: where the last page ended, (namespace, kind, name,
# revision) in list order; the next page is the rows after it. An audit list's: the key (at, id)
# of the last row sent and of the newest row of the list, fixed by its first page.

#: Tokens this server makes are a few hundred characters; a longer one is not its own. (Also
#: keeps the JSON decoder off deeply nested input, which it answers with RecursionError.)
MAX_TOKEN_LENGTH = 2048


def continue_token(r: Revision) -> str:
    return _encode_token([r.namespace, r.kind, r.name, r.revision])


def parse_continue(token: str) -> tuple[str, str, str, int]:
    """Raises ValueError for a token this server did not make."""
    value = _decode_token(token)
    if not (isinstance(value, list) and len(value) == 4):
        raise _bad_token(token)
    ns, kind, name, revision = value
    if not all(_storable_text(v) for v in (ns, kind, name)) or not _storable_int(
        revision, INT4_MAX
    ):
        raise _bad_token(token)
    return ns, kind, name, revision


def audit_continue_token(after: AuditKey, until: AuditKey) -> str:
    return _encode_token({"after": _audit_key(after), "until": _audit_key(until)})


def parse_audit_continue(token: str) -> tuple[AuditKey, AuditKey]:
    """(after, until) of an audit list's token; raises ValueError for one this server did not
    make."""
    value = _decode_token(token)
    if not (isinstance(value, dict) and set(value) == {"after", "until"}):
        raise _bad_token(token)
    try:
        return _parse_audit_key(value["after"]), _parse_audit_key(value["until"])
    except (ValueError, TypeError, OverflowError):
        raise _bad_token(token) from None


def _audit_key(key: AuditKey) -> list[Any]:
    return [format_time(key[0]), key[1]]


def _parse_audit_key(value: Any) -> AuditKey:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
        raise ValueError("not an audit key")
    if not _storable_int(value[1], INT8_MAX):
        raise ValueError("not an audit row id")
    return parse_time(value[0]).astimezone(dt.UTC), value[1]


def _encode_token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _decode_token(token: str) -> Any:
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"continue token is not valid: longer than {MAX_TOKEN_LENGTH} characters")
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise _bad_token(token) from None


def _bad_token(token: str) -> ValueError:
    return ValueError(f'continue token "{token}" is not valid')


def _storable_text(value: Any) -> bool:
    """Text PostgreSQL can take as a parameter (it refuses NUL characters)."""
    return isinstance(value, str) and "\x00" not in value


def _storable_int(value: Any, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


# ------------------------------------------------------------------------------- encoding


def encode(value: Any) -> str:
    """JSON as the server sends it: compact and ASCII, so its length is its size in bytes."""
    return json.dumps(value, separators=(",", ":"))


def encode_with(head: Mapping[str, Any], key: str, pieces: Iterable[str]) -> str:
    """``head`` with one more member, ``key``, an array of already encoded ``pieces``: a list
    or Table assembled from items encoded one at a time (as the page was measured), without
    encoding them again."""
    opening = encode(dict(head))
    assert opening.endswith("}") and opening != "{}", "head is a non-empty object"
    return f"{opening[:-1]},{json.dumps(key)}:[{','.join(pieces)}]}}"


# ------------------------------------------------------------------------------- tables


def age(created: str, now: dt.datetime) -> str:
    """kubectl's short age (``45s``, ``12m``, ``5h``, ``3d``)."""
    seconds = max(0, int((now - parse_time(created)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _column(name: str, kind: str, description: str, priority: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "format": "name" if name == "Name" else "",
        "description": description,
        "priority": priority,
    }


_COLUMNS = {
    REVISIONS: [
        _column("Name", "string", "kind.name.revision"),
        _column("Kind", "string", "Kind of the recorded object"),
        _column("Entry", "string", "Name of the recorded object"),
        _column("Revision", "integer", "Revision number"),
        _column("User", "string", "Who made the change (stamped at admission)"),
        _column("Reason", "string", "ferry.dev/change-reason of the change"),
        _column("Hash", "string", "Content hash", priority=1),
        _column("Age", "date", "Since the revision was recorded"),
    ],
    AUDIT_EVENTS: [
        _column("Name", "string", "Audit row id"),
        _column("Time", "string", "When it happened"),
        _column("Action", "string", "created, updated, deleted, rolled back, ..."),
        _column("Kind", "string", "Kind of the object"),
        _column("Entry", "string", "Name of the object"),
        _column("Revision", "integer", "Revision it concerns"),
        _column("User", "string", "Who did it, as the API server vouched"),
        _column("Details", "string", "key=value details", priority=1),
    ],
}


def _cells(resource: str, obj: Mapping[str, Any], now: dt.datetime) -> list[Any]:
    spec, meta = obj["spec"], obj["metadata"]
    if resource == REVISIONS:
        return [
            meta["name"],
            spec["kind"],
            spec["entry"],
            spec["revision"],
            spec.get("changedBy") or "",
            spec.get("reason") or "",
            spec["hash"],
            age(spec["createdAt"], now),
        ]
    details = spec.get("details") or {}
    return [
        meta["name"],
        spec["at"][:19].replace("T", " "),
        spec["action"],
        spec["kind"],
        spec["entry"],
        spec.get("revision") if spec.get("revision") is not None else "",
        spec.get("user") or "",
        " ".join(f"{k}={v}" for k, v in sorted(details.items())),
    ]


def table(
    resource: str,
    objects: Iterable[Mapping[str, Any]],
    now: dt.datetime,
    include: str,
    next_page: str | None = None,
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table; ``include`` is ``includeObject`` (None, Metadata, Object)."""
    rows = [table_row(resource, obj, now, include) for obj in objects]
    return table_head(resource, next_page) | {"rows": rows}


def table_head(resource: str, next_page: str | None = None) -> dict[str, Any]:
    """A Table without its ``rows``."""
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "metadata": _list_metadata(next_page),
        "columnDefinitions": _COLUMNS[resource],
    }


def table_row(
    resource: str, obj: Mapping[str, Any], now: dt.datetime, include: str
) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": _cells(resource, obj, now)}
    if include == "Object":
        row["object"] = dict(obj)
    elif include != "None":
        row["object"] = {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj["metadata"],
        }
    return row


def wants_table(accept: str) -> bool:
    """Whether an ``Accept`` header asks for a Table first (kubectl get does)."""
    for part in accept.split(","):
        params = {
            k.strip(): v.strip() for k, _, v in (p.partition("=") for p in part.split(";")[1:])
        }
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
        if part.split(";")[0].strip() in ("application/json", "*/*"):
            return False
    return False


# ------------------------------------------------------------------------------- discovery


def api_group() -> dict[str, Any]:
    version = {"groupVersion": API_VERSION, "version": VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    }


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]}


def api_resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": True,
                "kind": r.kind,
                "verbs": ["get", "list"],
                "shortNames": list(r.short_names),
            }
            for r in RESOURCES.values()
        ],
    }


# ------------------------------------------------------------------------------- selectors


class BadSelector(ValueError):
    """A field or label selector this API cannot answer; the message says which part."""


@dataclass(frozen=True)
class Requirement:
    key: str
    equal: bool  # False: ``!=``
    value: str


def parse_selector(text: str | None, what: str) -> list[Requirement]:
    """``a=b,c!=d`` (also ``==``); the set-based forms of label selectors are refused, and so
    is a NUL character, which no object's field holds (PostgreSQL refuses it in text)."""
    out: list[Requirement] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            key, value = part.split("!=", 1)
            equal = False
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            equal = True
        else:
            raise BadSelector(f'{what} "{part}" is not supported: use key=value or key!=value')
        key, value = key.strip(), value.strip()
        if "\x00" in key or "\x00" in value:
            raise BadSelector(f'{what} "{key.replace(chr(0), "")}": a NUL character is not allowed')
        out.append(Requirement(key, equal, value))
    return out
