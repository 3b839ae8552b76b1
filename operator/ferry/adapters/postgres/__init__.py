"""PostgreSQL: the revision store and audit log.

    migrations.py   versioned SQL (``sql/``), applied at operator start under an advisory lock
    pool.py         what every client shares: its own small pool, failures as StoreUnavailable
    store.py        the operator's asynchronous store: record, audit, mark deleted, prune
    history.py      the history API's reader (ferry history-api): revisions, state at a moment,
                    audit trail
    latest.py       ``ferry serve``'s reader: an object's latest revision, when Redis cannot say
    records.py      the rows both return (``Revision``, ``AuditRecord``)
    errors.py       ``StoreError``, the one error base of this adapter

The retention policy itself is pure and lives in ``ferry.domain.retention``.
"""

from ferry.adapters.postgres.errors import StoreError, StoreUnavailable
from ferry.adapters.postgres.history import HistoryReader
from ferry.adapters.postgres.migrations import migrate
from ferry.adapters.postgres.records import AuditRecord, Recorded, Revision
from ferry.adapters.postgres.store import Pruned, Store

__all__ = [
    "AuditRecord",
    "HistoryReader",
    "Pruned",
    "Recorded",
    "Revision",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "migrate",
]
