"""What every PostgreSQL client of Ferry's shares: a small pool of its own, opened once, and
PostgreSQL's failures reported as one error.

``Store`` (the operator's writes), ``HistoryReader`` (the history API) and ``LatestReader``
(``ferry serve``) each build on :class:`Pooled`, so a lost server, a refused connection or a
pool that waited too long reaches every caller as :class:`StoreUnavailable`, never as a
psycopg error. Two cases are told apart, for the clients that ask for them: a statement that
overran its pool's statement timeout (:class:`StatementTimeout`, still a
:class:`StoreUnavailable`) and a value PostgreSQL refused (:class:`QueryRejected`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import psycopg
from psycopg import AsyncConnection
from psycopg.pq.abc import PGresult
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ferry.adapters.postgres.errors import UNAVAILABLE, StoreError, StoreUnavailable


class StatementTimeout(StoreUnavailable):
    """PostgreSQL cancelled a statement that ran longer than the pool's statement timeout (or
    that an administrator cancelled): the store is up, that query was too costly."""


class QueryRejected(StoreError):
    """PostgreSQL refused a value of the statement (SQLSTATE class 22, "data exception": a
    number out of range, a NUL character in text). Raised only by clients whose every value
    comes from their caller (``Pooled.data_errors_are_input``): then it is the caller's
    mistake, not an outage. Other clients report it as :class:`StoreUnavailable`, as before."""


def connection_pool(
    database_url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout_seconds: float = 10.0,
    statement_timeout_seconds: float | None = None,
) -> AsyncConnectionPool:
    """A small pool, opened later (``open(wait=False)``), of autocommit connections: single
    statements are their own transaction (no BEGIN/COMMIT round trips); methods that need more
    than one statement open ``conn.transaction()``. ``timeout_seconds``: longest wait for a
    connection (connecting itself gives up after at most 5 s). ``statement_timeout_seconds``:
    longest any statement may run before PostgreSQL cancels it (None: no limit)."""
    return AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"connect_timeout": min(5, max(1, int(timeout_seconds))), "autocommit": True},
        timeout=timeout_seconds,
        configure=(
            None if statement_timeout_seconds is None else _limit(statement_timeout_seconds)
        ),
    )


def _limit(seconds: float) -> Callable[[AsyncConnection[Any]], Awaitable[None]]:
    """Sets ``statement_timeout`` on each new connection of a pool, once. (Not libpq's
    ``options`` parameter: that would replace any ``options`` the database URL carries.)"""
    milliseconds = max(1, round(seconds * 1000))

    async def configure(conn: AsyncConnection[Any]) -> None:
        # Autocommit: the setting holds for the session, i.e. every later statement.
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (f"{milliseconds}ms",)
        )

    return configure


class Pooled:
    """A client over its own pool (:func:`connection_pool`): ``await open()`` before use (it does
    not wait for PostgreSQL), ``await close()`` after."""

    #: Whether a data exception can only come from the caller's values (:class:`QueryRejected`).
    data_errors_are_input: ClassVar[bool] = False

    def __init__(
        self,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout_seconds: float = 10.0,
        statement_timeout_seconds: float | None = None,
    ) -> None:
        self._pool = connection_pool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            timeout_seconds=timeout_seconds,
            statement_timeout_seconds=statement_timeout_seconds,
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
        except psycopg.errors.QueryCanceled as exc:
            raise StatementTimeout(f"PostgreSQL: {exc}") from exc
        except psycopg.DataError as exc:
            if self.data_errors_are_input:
                raise QueryRejected(f"PostgreSQL: {exc}") from exc
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    async def _rows(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row ``sql`` returns, as dictionaries."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            return await cur.fetchall()

    async def _rows_within(
        self, sql: str, params: Mapping[str, Any], max_bytes: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """The rows ``sql`` returns, in order, up to the first whose size (as PostgreSQL sent
        it) brings their total to ``max_bytes`` (at least one), and whether any were left out.

        Rows are converted (JSON parsed) only when taken, one at a time, letting the event loop
        run between them: a batch of large rows costs the loop one row at a time, and the rows
        past the budget nothing."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            result = cur.pgresult
            if result is None:
                return [], False
            size, taken = 0, 0
            while taken < result.ntuples and size < max_bytes:
                size += _row_size(result, taken)
                taken += 1
            rows = []
            for _ in range(taken):
                row = await cur.fetchone()
                assert row is not None, "counted above"
                rows.append(row)
                await asyncio.sleep(0)
            return rows, taken < result.ntuples


def _row_size(result: PGresult, row: int) -> int:
    """Bytes of one row of a result, as PostgreSQL sent them (JSON as text)."""
    return sum(len(result.get_value(row, column) or b"") for column in range(result.nfields))
