"""History, rollback, audit and point-in-time recovery: the Python API behind the ``ferry`` CLI.

    from ferry.history import Session, history, diff, rollback, export, restore, audit
    session = Session(database_url, Identity(as_user="bob"))  # identity: optional
    for r in history(session, "platform", "payments-api"): ...

Every call checks Kubernetes RBAC as the caller first; failures raise ``HistoryError``.
"""

from ferry.history.api import (
    Diff,
    Rollback,
    Session,
    audit,
    diff,
    export,
    history,
    restore,
    rollback,
)
from ferry.history.cluster import Identity
from ferry.history.offline import Finding, validate_file
from ferry.history.present import Forbidden, HistoryError, NotFound

__all__ = [
    "Diff",
    "Finding",
    "Forbidden",
    "HistoryError",
    "Identity",
    "NotFound",
    "Rollback",
    "Session",
    "audit",
    "diff",
    "export",
    "history",
    "restore",
    "rollback",
    "validate_file",
]
