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
            kwargs={"connect_timeout": 5, "autocommit": False},
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
        already the latest revision of this object (then return that one: idempotent)."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{kind}/{namespace}/{name}",),
                )
                await cur.execute(
                    "SELECT * FROM revisions WHERE kind=%s AND namespace=%s AND name=%s "
                    "ORDER BY revision DESC LIMIT 1",
                    (kind, namespace, name),
                )
                latest = await cur.fetchone()
                if latest is not None and latest["hash"] == content_hash:
                    return Recorded(Revision.from_row(latest), created=False)
                number = 1 if latest is None else latest["revision"] + 1
                if latest is None:
                    action = "created"
                await cur.execute(
                    "INSERT INTO revisions (kind, uid, namespace, name, revision, content, spec,"
                    " hash, changed_by, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING *",
                    (
                        kind,
                        uid,
                        namespace,
                        name,
                        number,
                        Jsonb(content),
                        Jsonb(spec),
                        content_hash,
                        changed_by,
                        reason,
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                await cur.execute(
                    "INSERT INTO audit_log (action, kind, namespace, name, uid, username, revision,"
                    " details) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        action,
                        kind,
                        namespace,
                        name,
                        uid,
                        changed_by,
                        number,
                        Jsonb({"hash": content_hash, "reason": reason}),
                    ),
                )
                return Recorded(Revision.from_row(row), created=True)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

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
                    "INSERT INTO audit_log (action, kind, namespace, name, uid, username, revision,"
                    " details) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
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
                await conn.commit()
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
