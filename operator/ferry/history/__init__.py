"""History, rollback, audit and point-in-time recovery: the service behind ``ferry history``,
``diff``, ``rollback``, ``export``, ``restore`` and ``audit``, usable from Python.

    from ferry.history import Identity, Session, history
    session = Session(database_url, Identity(as_user="bob"))  # identity: optional
    for r in history(session, "platform", "payments-api"): ...

    service.py    the operations (each checks Kubernetes RBAC as the caller first)
    documents.py  pure: diffs of contents, export documents, what a restore accepts
    gitops.py     pure: which GitOps tool would undo a rollback, and how to make it stick
    errors.py     HistoryError (NotFound, Forbidden): everything this package raises
"""

from ferry.adapters.kube_caller import Identity
from ferry.history.errors import Forbidden, HistoryError, NotFound
from ferry.history.service import (
    HISTORY_KINDS,
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

__all__ = [
    "HISTORY_KINDS",
    "Diff",
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
]
