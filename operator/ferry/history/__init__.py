"""History, rollback, audit and point-in-time recovery: the service behind ``ferry history``,
``diff``, ``rollback``, ``export``, ``restore`` and ``audit``, usable from Python.

    from ferry.history import Identity, Session, history
    session = Session(Identity(as_user="bob"))  # default: the current kubeconfig context
    for r in history(session, "platform", "payments-api"): ...

    service.py    the operations, through the Kubernetes API server as the caller: history is
                  read from the aggregated history API (``ferry history-api``)
    resources.py  pure: the history API's resources (objects, names, Tables, selectors)
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
