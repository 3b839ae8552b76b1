"""The history API's reader: revisions, the state at a moment and the audit trail, read-only.

Only ``ferry history-api`` (the aggregated API server, decision 0021) reads these tables for
people; the CLI asks that API through the Kubernetes API server and holds no database
credentials. Asynchronous over a small pool: one server answers many callers, so every statement
is bounded in time (:data:`STATEMENT_TIMEOUT_SECONDS`) and the SQL names only the conditions a
query has, so that PostgreSQL plans each with the indexes that start with ``namespace``
(migration 0003). Every method raises :class:`StoreUnavailable` when PostgreSQL cannot answer,
:class:`StatementTimeout` (one of them) when a statement ran too long, and
:class:`QueryRejected` for a value PostgreSQL refuses. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ferry.adapters.postgres.pool import Pooled
from ferry.adapters.postgres.records import AuditRecord, Revision

T = TypeVar("T")

_REVISION_ORDER = " ORDER BY r.namespace, r.kind, r.name, r.revision LIMIT %(limit)s"

#: Longest a statement of the history API may run before PostgreSQL cancels it. Its queries are
#: index scans bounded by a page (milliseconds); one that is not (a sequential scan, a lock held
#: by someone else) must not hold one of the few connections every tenant shares. A constant,
#: not a setting: ``ferry history-api`` takes its options on its own command line, and there is
#: no settings group for it in ``ferry.settings``.
STATEMENT_TIMEOUT_SECONDS = 5.0

#: The key of an audit row in list order: (at, id).
AuditKey = tuple[dt.datetime, int]


@dataclass(frozen=True)
class RevisionQuery:
    """Which revisions to list; None matches any. ``current_at`` keeps, per object, only the
    revision current at that moment (its latest at or before it, unless deleted since);
    ``current`` does the same for now (both together: the revisions current at both)."""

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
    """Which audit rows to list (None: any); at most ``limit`` of them. ``after`` and ``until``
    bound their keys (at, id): after ``after``, up to and including ``until``."""

    namespace: str | None = None
    kinds: tuple[str, ...] | None = None
    excluded_kinds: tuple[str, ...] = ()
    name: str | None = None
    username: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    id: int | None = None
    after: AuditKey | None = None
    until: AuditKey | None = None
    limit: int = 1000


# The revision current at a moment: the latest created at or before it, unless a deletion came
# after it (a re-created object starts a new revision, which hides an earlier deletion).
# ``{at}`` is a parameter's name, or None for now.
def _current(at: str | None) -> str:
    by = f" AND l.created_at <= %({at})s::timestamptz" if at else ""
    until = f" AND d.at <= %({at})s::timestamptz" if at else ""
    return (
        "r.revision = (SELECT max(l.revision) FROM revisions l WHERE l.kind=r.kind"
        f"   AND l.namespace=r.namespace AND l.name=r.name{by})"
        " AND NOT EXISTS (SELECT 1 FROM audit_log d"
        "   WHERE d.action='deleted' AND d.kind=r.kind AND d.namespace=r.namespace"
        f"   AND d.name=r.name AND d.at >= r.created_at{until})"
    )


def _revisions_sql(query: RevisionQuery) -> tuple[str, dict[str, Any]]:
    """The query of :meth:`HistoryReader.revisions`, in its order, ``limit`` still to bind."""
    where, params = _revision_where(query)
    return f"SELECT r.* FROM revisions r WHERE {where}{_REVISION_ORDER}", params


def _revision_where(query: RevisionQuery) -> tuple[str, dict[str, Any]]:
    """The conditions a query has, and their parameters. Only those: a condition that is always
    true for this query (``%(ns)s IS NULL OR …``) would hide from the planner which index to
    use once the statement is prepared."""
    params: dict[str, Any] = {
        "ns": query.namespace,
        "kind": query.kind,
        "name": query.name,
        "rev": query.revision,
        "user": query.changed_by,
        "at": query.current_at,
    }
    columns = {
        "ns": "r.namespace = %(ns)s::text",
        "kind": "r.kind = %(kind)s::text",
        "name": "r.name = %(name)s::text",
        "rev": "r.revision = %(rev)s::int",
        "user": "r.changed_by = %(user)s::text",
    }
    where = [sql for key, sql in columns.items() if params[key] is not None]
    if query.current:
        where.append(_current(None))
    if query.current_at is not None:
        where.append(_current("at"))
    if query.after is not None:
        where.append(
            "(r.namespace, r.kind, r.name, r.revision) > (%(a0)s, %(a1)s, %(a2)s, %(a3)s::int)"
        )
        params.update({f"a{i}": v for i, v in enumerate(query.after)})
    return " AND ".join(where) or "true", params


def _audit_where(query: AuditQuery) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {
        "since": query.since,
        "user": query.username,
        "ns": query.namespace,
        "name": query.name,
        "action": query.action,
        "id": query.id,
        "kinds": list(query.kinds) if query.kinds is not None else None,
        "excluded": list(query.excluded_kinds) or None,
    }
    columns = {
        "since": "at >= %(since)s::timestamptz",
        "user": "username = %(user)s::text",
        "ns": "namespace = %(ns)s::text",
        "name": "name = %(name)s::text",
        "action": "action = %(action)s::text",
        "id": "id = %(id)s::bigint",
        "kinds": "kind = ANY(%(kinds)s::text[])",
        "excluded": "NOT (kind = ANY(%(excluded)s::text[]))",
    }
    where = [sql for key, sql in columns.items() if params[key] is not None]
    for bound, name, sql in (
        (query.after, "after", "(at, id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)"),
        (query.until, "until", "(at, id) <= (%(until_at)s::timestamptz, %(until_id)s::bigint)"),
    ):
        if bound is not None:
            where.append(sql)
            params.update({f"{name}_at": bound[0], f"{name}_id": bound[1]})
    return " AND ".join(where) or "true", params


class HistoryReader(Pooled):
    """``await reader.open()`` once; then ``revisions(query)`` and the ``audit_*`` methods."""

    # Every value of every statement here comes from a request: PostgreSQL refusing one (a
    # number out of range, say) is the caller's mistake, not the store failing.
    data_errors_are_input = True

    def __init__(
        self,
        database_url: str,
        *,
        max_size: int = 4,
        timeout_seconds: float = 10.0,
        statement_timeout_seconds: float = STATEMENT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(
            database_url,
            max_size=max_size,
            timeout_seconds=timeout_seconds,
            statement_timeout_seconds=statement_timeout_seconds,
        )

    async def revisions(self, query: RevisionQuery) -> list[Revision]:
        """Matching revisions ordered by namespace, kind, name and revision (at most
        ``limit``: LIMIT NULL is no limit)."""
        sql, params = _revisions_sql(query)
        rows = await self._rows(sql, params | {"limit": query.limit})
        return [Revision.from_row(r) for r in rows]

    async def revisions_within(
        self, query: RevisionQuery, max_bytes: int
    ) -> tuple[list[Revision], bool]:
        """As :meth:`revisions`, stopping at the first revision that brings their size to
        ``max_bytes``; and whether more may follow (some left out, or ``limit`` reached)."""
        sql, params = _revisions_sql(query)
        return await self._page(sql, params, query.limit, max_bytes, Revision.from_row)

    async def audit_log(self, query: AuditQuery) -> list[AuditRecord]:
        """The newest ``limit`` matching rows, oldest first."""
        where, params = _audit_where(query)
        rows = await self._rows(
            f"SELECT * FROM (SELECT * FROM audit_log WHERE {where}"
            "   ORDER BY at DESC, id DESC LIMIT %(limit)s) newest ORDER BY at, id",
            params | {"limit": query.limit},
        )
        return [AuditRecord.from_row(r) for r in rows]

    async def audit_window(self, query: AuditQuery) -> tuple[AuditKey, AuditKey] | None:
        """The keys of the oldest and the newest of the newest ``limit`` matching rows (what
        :meth:`audit_log` would return, without reading their details); None if none match."""
        where, params = _audit_where(query)
        rows = await self._rows(
            f"WITH w AS MATERIALIZED (SELECT at, id FROM audit_log WHERE {where}"
            "   ORDER BY at DESC, id DESC LIMIT %(limit)s)"
            " (SELECT at, id FROM w ORDER BY at, id LIMIT 1)"
            " UNION ALL (SELECT at, id FROM w ORDER BY at DESC, id DESC LIMIT 1)",
            params | {"limit": query.limit},
        )
        if not rows:
            return None
        oldest, newest = rows
        return (oldest["at"], oldest["id"]), (newest["at"], newest["id"])

    async def audit_within(
        self, query: AuditQuery, max_bytes: int
    ) -> tuple[list[AuditRecord], bool]:
        """The oldest ``limit`` matching rows (within ``after`` and ``until``), oldest first,
        stopping at the first that brings their size to ``max_bytes``: one stretch of a list
        read forwards; and whether more may follow."""
        where, params = _audit_where(query)
        sql = f"SELECT * FROM audit_log WHERE {where} ORDER BY at, id LIMIT %(limit)s"
        return await self._page(sql, params, query.limit, max_bytes, AuditRecord.from_row)

    async def _page(
        self,
        sql: str,
        params: dict[str, Any],
        limit: int | None,
        max_bytes: int,
        from_row: Callable[[Mapping[str, Any]], T],
    ) -> tuple[list[T], bool]:
        """``sql``'s rows (at most ``limit``; None: no bound) up to ``max_bytes``, and whether
        more may follow (some left out, or ``limit`` reached)."""
        rows, cut = await self._rows_within(sql, params | {"limit": limit}, max_bytes)
        return [from_row(r) for r in rows], cut or len(rows) == limit
