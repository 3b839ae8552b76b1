"""The history API's reader: revisions, the state at a moment and the audit trail, read-only.

Only ``ferry history-api`` (the aggregated API server, decision 0021) reads these tables for
people; the CLI asks that API through the Kubernetes API server and holds no database
credentials. Asynchronous over a small pool: one server answers many callers. Every method
raises :class:`StoreUnavailable` when PostgreSQL cannot answer. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ferry.adapters.postgres.pool import Pooled
from ferry.adapters.postgres.records import AuditRecord, Revision


@dataclass(frozen=True)
class RevisionQuery:
    """Which revisions to list; None matches any. ``current_at`` keeps, per object, only the
    revision current at that moment (its latest at or before it, unless deleted since);
    ``current`` does the same for now."""

    namespace: str | None = None
    kind: str | None = None
    name: str | None = None
    revision: int | None = None
    changed_by: str | None = None
    current: bool = False
    current_at: dt.datetime | None = None
    after: tuple[str, str, str, int] | None = None
    """Only revisions after this (namespace, kind, name, revision), in list order: a page."""
    limit: int | None = None


@dataclass(frozen=True)
class AuditQuery:
    """Which audit rows to list (None: any); the newest ``limit`` of them, oldest first."""

    namespace: str | None = None
    kinds: tuple[str, ...] | None = None
    excluded_kinds: tuple[str, ...] = ()
    name: str | None = None
    username: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    id: int | None = None
    limit: int = 1000


_REVISIONS = (
    "SELECT r.* FROM revisions r"
    " WHERE (%(ns)s::text IS NULL OR r.namespace = %(ns)s::text)"
    " AND (%(kind)s::text IS NULL OR r.kind = %(kind)s::text)"
    " AND (%(name)s::text IS NULL OR r.name = %(name)s::text)"
    " AND (%(rev)s::int IS NULL OR r.revision = %(rev)s::int)"
    " AND (%(user)s::text IS NULL OR r.changed_by = %(user)s::text)"
)

# The revision current at a moment: the latest created at or before it, unless a deletion came
# after it (a re-created object starts a new revision, which hides an earlier deletion).
_CURRENT = (
    " AND r.revision = (SELECT max(l.revision) FROM revisions l WHERE l.kind=r.kind"
    "   AND l.namespace=r.namespace AND l.name=r.name"
    "   AND (%(at)s::timestamptz IS NULL OR l.created_at <= %(at)s::timestamptz))"
    " AND NOT EXISTS (SELECT 1 FROM audit_log d"
    "   WHERE d.action='deleted' AND d.kind=r.kind AND d.namespace=r.namespace"
    "   AND d.name=r.name AND d.at >= r.created_at"
    "   AND (%(at)s::timestamptz IS NULL OR d.at <= %(at)s::timestamptz))"
)

_AUDIT = (
    "SELECT * FROM (SELECT * FROM audit_log"
    "   WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)"
    "   AND (%(user)s::text IS NULL OR username = %(user)s::text)"
    "   AND (%(ns)s::text IS NULL OR namespace = %(ns)s::text)"
    "   AND (%(name)s::text IS NULL OR name = %(name)s::text)"
    "   AND (%(action)s::text IS NULL OR action = %(action)s::text)"
    "   AND (%(id)s::bigint IS NULL OR id = %(id)s::bigint)"
    "   AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))"
    "   AND NOT (kind = ANY(%(excluded)s::text[]))"
    "   ORDER BY at DESC, id DESC LIMIT %(limit)s) newest ORDER BY at, id"
)


class HistoryReader(Pooled):
    """``await reader.open()`` once; then ``revisions(query)`` and ``audit_log(query)``."""

    def __init__(
        self, database_url: str, *, max_size: int = 4, timeout_seconds: float = 10.0
    ) -> None:
        super().__init__(database_url, max_size=max_size, timeout_seconds=timeout_seconds)

    async def revisions(self, query: RevisionQuery) -> list[Revision]:
        """Matching revisions ordered by namespace, kind, name and revision (at most
        ``limit``: LIMIT NULL is no limit)."""
        sql = _REVISIONS + (_CURRENT if query.current or query.current_at else "")
        if query.after is not None:
            sql += (
                " AND (r.namespace, r.kind, r.name, r.revision) > (%(a0)s, %(a1)s, %(a2)s, %(a3)s)"
            )
        rows = await self._rows(
            sql + " ORDER BY r.namespace, r.kind, r.name, r.revision LIMIT %(limit)s",
            {
                "ns": query.namespace,
                "kind": query.kind,
                "name": query.name,
                "rev": query.revision,
                "user": query.changed_by,
                "at": query.current_at,
                "limit": query.limit,
                **{f"a{i}": v for i, v in enumerate(query.after or ())},
            },
        )
        return [Revision.from_row(r) for r in rows]

    async def audit_log(self, query: AuditQuery) -> list[AuditRecord]:
        rows = await self._rows(
            _AUDIT,
            {
                "since": query.since,
                "user": query.username,
                "ns": query.namespace,
                "name": query.name,
                "action": query.action,
                "id": query.id,
                "kinds": list(query.kinds) if query.kinds is not None else None,
                "excluded": list(query.excluded_kinds),
                "limit": query.limit,
            },
        )
        return [AuditRecord.from_row(r) for r in rows]
