"""What every PostgreSQL client of Ferry's shares: a small pool of its own, opened once, and
PostgreSQL's failures reported as one error.

``Store`` (the operator's writes), ``HistoryReader`` (the history API) and ``LatestReader``
(``ferry serve``) each build on :class:`Pooled`, so a lost server, a refused connection or a
pool that waited too long reaches every caller as :class:`StoreUnavailable`, never as a
psycopg error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ferry.adapters.postgres.errors import UNAVAILABLE, StoreUnavailable


def connection_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, timeout_seconds: float = 10.0
) -> AsyncConnectionPool:
    """A small pool, opened later (``open(wait=False)``), of autocommit connections: single
    statements are their own transaction (no BEGIN/COMMIT round trips); methods that need more
    than one statement open ``conn.transaction()``. ``timeout_seconds``: longest wait for a
    connection (connecting itself gives up after at most 5 s)."""
    return AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"connect_timeout": min(5, max(1, int(timeout_seconds))), "autocommit": True},
        timeout=timeout_seconds,
    )


class Pooled:
    """A client over its own pool (:func:`connection_pool`): ``await open()`` before use (it does
    not wait for PostgreSQL), ``await close()`` after."""

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._pool = connection_pool(
            database_url, min_size=min_size, max_size=max_size, timeout_seconds=timeout_seconds
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection of the pool; PostgreSQL failing, in getting it or in using it, comes out
        as :class:`StoreUnavailable`."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    async def _rows(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row ``sql`` returns, as dictionaries."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            return await cur.fetchall()
