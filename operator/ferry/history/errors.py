"""The errors of the history service: everything it raises is a :class:`HistoryError`.

Adapter errors (PostgreSQL, Kubernetes) are translated at the service's edge, so a caller of
``ferry.history`` catches one base; each message names the object, the revision or the document
that was wrong. The CLI prints them as ``error: <message>`` with exit status 1.
"""

from __future__ import annotations


class HistoryError(Exception):
    """Base of every error of ``ferry.history``."""


class NotFound(HistoryError):
    """An object or a revision that does not exist; the message names it."""


class Forbidden(HistoryError):
    """Kubernetes RBAC does not let the caller see or change the object."""
