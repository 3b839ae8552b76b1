"""The revision store and audit log in PostgreSQL.

Record-before-materialise hinges on ``record``: it is idempotent by content hash, so a crash or a
retry between the insert and the status write never creates a duplicate revision, and a revision
row exists before any content reaches a workload.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

# pg_advisory_lock key for migrations: any constant shared by all Ferry replicas.
_MIGRATION_LOCK = 0x6665727279  # "ferry"


# psycopg_pool.PoolTimeout is a psycopg.OperationalError, so this covers a pool that cannot connect.
_UNAVAILABLE = (psycopg.Error, OSError, asyncio.TimeoutError)


INSERT_AUDIT = (
    "INSERT INTO audit_log (action, kind, namespace, name, uid, username, revision, details)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"
)


class StoreUnavailable(Exception):
    """PostgreSQL could not be reached or failed; the caller reports Recorded=False and retries."""


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


def migrate(database_url: str) -> list[str]:
    """Apply pending SQL migrations under an advisory lock; returns the ids applied.

    Blocking (yoyo is synchronous); the operator calls it once at start via ``asyncio.to_thread``.
    """
    from yoyo import get_backend, read_migrations

    migrations_dir = resources.files("ferry") / "migrations"
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            backend = get_backend(_yoyo_url(database_url))
            migrations = read_migrations(str(migrations_dir))
            pending = backend.to_apply(migrations)
            with backend.lock():
                backend.apply_migrations(pending)
            return [m.id for m in pending]
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def _yoyo_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgres", "postgresql") else url


class Store:
    """Async access to revisions and the audit log over a small connection pool."""

    def __init__(self, database_url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self._pool = AsyncConnectionPool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # Autocommit: single statements are their own transaction (no BEGIN/COMMIT round
            # trips); methods that need more than one statement open ``conn.transaction()``.
            kwargs={"connect_timeout": 5, "autocommit": True},
            timeout=10,
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def record(
        self,
        *,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        content: Any,
        spec: Any,
        content_hash: str,
        changed_by: str | None,
        reason: str | None,
        action: str = "updated",
    ) -> Recorded:
        """Insert revision n+1 and its audit row in one transaction, unless ``content_hash`` is
        already the latest revision of this object (then return that one: idempotent).

        One statement, one round trip: ``ferry_record_revision`` (migration 0002) takes the
        per-object advisory lock, reads the latest revision and writes both rows.
        """
        try:
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT * FROM ferry_record_revision(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        kind,
                        uid,
                        namespace,
                        name,
                        Jsonb(content),
                        Jsonb(spec),
                        content_hash,
                        changed_by,
                        reason,
                        action,
                    ),
                )
                row = await cur.fetchone()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        assert row is not None
        return Recorded(Revision.from_row(row), created=bool(row["created"]))

    async def audit(
        self,
        action: str,
        *,
        kind: str,
        namespace: str,
        name: str,
        uid: str | None = None,
        username: str | None = None,
        revision: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append to the audit trail. Best effort for non-revision actions: never blocks a sync."""
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    INSERT_AUDIT,
                    (
                        action,
                        kind,
                        namespace,
                        name,
                        uid,
                        username,
                        revision,
                        Jsonb(dict(details or {})),
                    ),
                )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    async def revisions(self, kind: str, namespace: str, name: str) -> list[Revision]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT * FROM revisions WHERE kind=%s AND namespace=%s AND name=%s "
                "ORDER BY revision",
                (kind, namespace, name),
            )
            return [Revision.from_row(r) for r in await cur.fetchall()]

    async def mark_deleted(
        self, kind: str, namespace: str, name: str, *, username: str | None = None
    ) -> bool:
        """Write a 'deleted' audit row for an object with history, unless its last event already
        is one. Point-in-time export needs deletions; kinds without a finalizer (ConfigSchema)
        call this when their watch says the object is gone, which may happen more than once."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO audit_log (action, kind, namespace, name, username, details)"
                    " SELECT 'deleted', %(kind)s, %(ns)s, %(name)s, %(user)s, '{}'::jsonb"
                    " WHERE EXISTS (SELECT 1 FROM revisions"
                    "   WHERE kind=%(kind)s AND namespace=%(ns)s AND name=%(name)s)"
                    " AND NOT EXISTS (" + _DELETED_AFTER_LATEST_REVISION + ")",
                    {"kind": kind, "ns": namespace, "name": name, "user": username},
                )
                return cur.rowcount == 1
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    async def prune(self, policy: Retention, now: dt.datetime | None = None) -> Pruned:
        """Apply the retention policy in one transaction; see :meth:`Retention.cutoffs`."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                return await _prune(conn, policy, now or dt.datetime.now(dt.UTC))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc


# An object's deletion counts when it comes after its latest revision: a re-created object
# starts a new revision, which hides an earlier deletion.
_DELETED_AFTER_LATEST_REVISION = (
    "SELECT 1 FROM audit_log d WHERE d.action='deleted' AND d.kind=%(kind)s"
    " AND d.namespace=%(ns)s AND d.name=%(name)s AND d.at >= (SELECT max(created_at)"
    " FROM revisions WHERE kind=%(kind)s AND namespace=%(ns)s AND name=%(name)s)"
)


@dataclass(frozen=True)
class Retention:
    """How long history is kept. ``None`` everywhere keeps everything (the default).

    A revision is deleted only when every configured rule allows it, and never when it is the
    latest revision of its object:

    * ``revisions``: keep the last N revisions of each object;
    * ``days``: keep every revision that was current at some moment in the last D days, so
      ``ferry export --at`` can rebuild any moment of that window exactly;
    * ``audit_days``: audit rows older than this go (the audit log is kept apart, usually longer).

    A deleted object's remaining revisions go once its deletion is older than the later of the
    two day cutoffs, so an export never resurrects an object whose deletion row was pruned.
    """

    revisions: int | None = None
    days: int | None = None
    audit_days: int | None = None

    def cutoffs(self, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
        revision_cutoff = now - dt.timedelta(days=self.days) if self.days is not None else None
        audit_cutoff = (
            now - dt.timedelta(days=self.audit_days) if self.audit_days is not None else None
        )
        return revision_cutoff, audit_cutoff


@dataclass(frozen=True)
class Pruned:
    revisions: int
    audit_rows: int


async def _prune(conn: Any, policy: Retention, now: dt.datetime) -> Pruned:
    revision_cutoff, audit_cutoff = policy.cutoffs(now)
    removed_revisions = removed_audit = 0
    deleted_cutoff = max(
        (c for c in (revision_cutoff, audit_cutoff) if c is not None), default=None
    )
    if deleted_cutoff is not None:
        cur = await conn.execute(
            "WITH latest AS (SELECT kind, namespace, name, max(created_at) AS last_at"
            "   FROM revisions GROUP BY kind, namespace, name),"
            " gone AS (SELECT l.kind, l.namespace, l.name FROM latest l WHERE EXISTS ("
            "   SELECT 1 FROM audit_log d WHERE d.action='deleted' AND d.kind=l.kind"
            "   AND d.namespace=l.namespace AND d.name=l.name AND d.at >= l.last_at"
            "   AND d.at < %(cutoff)s))"
            " DELETE FROM revisions r USING gone g"
            " WHERE r.kind=g.kind AND r.namespace=g.namespace AND r.name=g.name",
            {"cutoff": deleted_cutoff},
        )
        removed_revisions += cur.rowcount
    if policy.revisions is not None or revision_cutoff is not None:
        cur = await conn.execute(
            "WITH ranked AS (SELECT id,"
            "   row_number() OVER (PARTITION BY kind, namespace, name ORDER BY revision DESC)"
            "     AS rank,"
            "   lead(created_at) OVER (PARTITION BY kind, namespace, name ORDER BY revision)"
            "     AS superseded_at"
            "   FROM revisions)"
            " DELETE FROM revisions WHERE id IN (SELECT id FROM ranked WHERE rank > 1"
            "   AND (%(keep)s::int IS NULL OR rank > %(keep)s::int)"
            "   AND (%(cutoff)s::timestamptz IS NULL OR superseded_at < %(cutoff)s::timestamptz))",
            {"keep": policy.revisions, "cutoff": revision_cutoff},
        )
        removed_revisions += cur.rowcount
    if audit_cutoff is not None:
        cur = await conn.execute("DELETE FROM audit_log WHERE at < %s", (audit_cutoff,))
        removed_audit = cur.rowcount
    return Pruned(removed_revisions, removed_audit)


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


class HistoryReader:
    """Synchronous reads (and the CLI's own audit rows) for the ``ferry`` CLI.

    The CLI is a short-lived process with no event loop, so one plain connection is simpler and
    faster to start than a pool. Every method raises :class:`StoreUnavailable` when PostgreSQL
    cannot answer.
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def __enter__(self) -> HistoryReader:
        try:
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=10, row_factory=dict_row
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        return self

    def __exit__(self, *_: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def _rows(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...]) -> list[dict[str, Any]]:
        assert self._conn is not None, "use HistoryReader as a context manager"
        try:
            return self._conn.execute(sql, params).fetchall()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def revisions(self, kind: str, namespace: str, name: str) -> list[Revision]:
        rows = self._rows(
            "SELECT * FROM revisions WHERE kind=%s AND namespace=%s AND name=%s ORDER BY revision",
            (kind, namespace, name),
        )
        return [Revision.from_row(r) for r in rows]

    def kinds_with_history(self, namespace: str, name: str) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT kind FROM revisions WHERE namespace=%s AND name=%s ORDER BY kind",
            (namespace, name),
        )
        return [str(r["kind"]) for r in rows]

    def state_at(self, at: dt.datetime | None, namespace: str | None = None) -> list[Revision]:
        """The revision current at ``at`` (default: now) of every object that existed then:
        its latest revision created at or before ``at``, unless a deletion came after it."""
        rows = self._rows(
            "WITH last AS (SELECT DISTINCT ON (kind, namespace, name) * FROM revisions"
            "   WHERE (%(at)s::timestamptz IS NULL OR created_at <= %(at)s::timestamptz)"
            "   AND (%(ns)s::text IS NULL OR namespace = %(ns)s::text)"
            "   ORDER BY kind, namespace, name, revision DESC)"
            " SELECT last.* FROM last WHERE NOT EXISTS (SELECT 1 FROM audit_log d"
            "   WHERE d.action='deleted' AND d.kind=last.kind AND d.namespace=last.namespace"
            "   AND d.name=last.name AND d.at >= last.created_at"
            "   AND (%(at)s::timestamptz IS NULL OR d.at <= %(at)s::timestamptz))"
            " ORDER BY namespace, kind, name",
            {"at": at, "ns": namespace},
        )
        return [Revision.from_row(r) for r in rows]

    def audit_log(
        self,
        *,
        since: dt.datetime | None = None,
        username: str | None = None,
        namespace: str | None = None,
        kinds: tuple[str, ...] | None = None,
        name: str | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Audit rows, oldest first, newest ``limit`` of those matching."""
        rows = self._rows(
            "SELECT * FROM (SELECT * FROM audit_log"
            "   WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)"
            "   AND (%(user)s::text IS NULL OR username = %(user)s::text)"
            "   AND (%(ns)s::text IS NULL OR namespace = %(ns)s::text)"
            "   AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))"
            "   AND (%(name)s::text IS NULL OR name = %(name)s::text)"
            "   ORDER BY at DESC, id DESC LIMIT %(limit)s) newest ORDER BY at, id",
            {
                "since": since,
                "user": username,
                "ns": namespace,
                "kinds": list(kinds) if kinds is not None else None,
                "name": name,
                "limit": limit,
            },
        )
        return [AuditRecord.from_row(r) for r in rows]

    def append_audit(
        self,
        action: str,
        *,
        kind: str,
        namespace: str,
        name: str,
        uid: str | None = None,
        username: str | None = None,
        revision: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._rows(
            INSERT_AUDIT + " RETURNING id",
            (action, kind, namespace, name, uid, username, revision, Jsonb(dict(details or {}))),
        )
