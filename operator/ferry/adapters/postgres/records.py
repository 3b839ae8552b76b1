"""Rows of the ``revisions`` and ``audit_log`` tables (see ``sql/0001_revisions_and_audit.sql``),
as both the operator's store and the CLI's reader return them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Appends one audit row; the operator (``Store.audit``) and the CLI (rollback) both write them.
INSERT_AUDIT = (
    "INSERT INTO audit_log (action, kind, namespace, name, uid, username, revision, details)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"
)


@dataclass(frozen=True)
class Revision:
    kind: str
    namespace: str
    name: str
    uid: str
    revision: int
    hash: str
    content: Any
    spec: Any
    changed_by: str | None
    reason: str | None
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Revision:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Recorded:
    revision: Revision
    created: bool  # False when the content was already the latest revision


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: dt.datetime
    action: str
    kind: str
    namespace: str
    name: str
    uid: str | None
    username: str | None
    revision: int | None
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditRecord:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})
