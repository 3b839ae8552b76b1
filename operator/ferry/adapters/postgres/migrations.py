"""Schema migrations: the versioned SQL in ``sql/``, applied by yoyo at operator start."""

from __future__ import annotations

from importlib import resources

import psycopg

# pg_advisory_lock key for migrations: any constant shared by all Ferry replicas.
_MIGRATION_LOCK = 0x6665727279  # "ferry"


def migrate(database_url: str) -> list[str]:
    """Apply pending SQL migrations under an advisory lock; returns the ids applied.

    Blocking (yoyo is synchronous); the operator calls it once at start via ``asyncio.to_thread``.
    Several replicas starting together take turns on the lock; the later ones find nothing to do.
    """
    from yoyo import get_backend, read_migrations

    migrations_dir = resources.files("ferry.adapters.postgres") / "sql"
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
