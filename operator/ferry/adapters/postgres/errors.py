"""The errors of the PostgreSQL adapter: everything it raises is a :class:`StoreError`.

Callers never see psycopg's own exceptions: each method catches :data:`UNAVAILABLE` and raises
:class:`StoreUnavailable`, so "the database is down" is one ``except`` for the reconcilers
(``Recorded=False``, retry), the retention loop (log and try later) and the CLI (``error: …``).
"""

from __future__ import annotations

import asyncio

import psycopg

#: What PostgreSQL, the network or the pool raise when the store cannot answer.
#: (psycopg_pool.PoolTimeout is a psycopg.OperationalError, so a pool that cannot connect is in.)
UNAVAILABLE = (psycopg.Error, OSError, asyncio.TimeoutError)


class StoreError(Exception):
    """Base of every error the revision store raises."""


class StoreUnavailable(StoreError):
    """PostgreSQL could not be reached or failed; the caller reports Recorded=False and retries."""
