"""How long history is kept: the retention policy, as pure data and arithmetic.

The operator applies it (``ferry.adapters.postgres.store.Store.prune``) at start and hourly;
docs/decisions/0007-history-and-rollback.md explains the rules.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Retention:
    """How long history is kept. ``None`` everywhere keeps everything (the default).

    A revision is deleted only when every configured rule allows it, and never when it is the
    latest revision of its object:

    * ``revisions``: keep the last N revisions of each object;
    * ``days``: keep every revision that was current at some moment in the last D days, so
      ``ferry export --at`` can rebuild any moment of that window exactly;
    * ``audit_days``: audit rows older than this go (the audit log is kept apart, usually longer).

    A deleted object's remaining revisions go once its deletion is older than the later of the
    two day cutoffs (:meth:`deleted_cutoff`), so an export never resurrects an object whose
    deletion row was pruned.
    """

    revisions: int | None = None
    days: int | None = None
    audit_days: int | None = None

    def cutoffs(self, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
        """(revision cutoff, audit cutoff): what is older may go; ``None``: no such rule."""
        revision_cutoff = now - dt.timedelta(days=self.days) if self.days is not None else None
        audit_cutoff = (
            now - dt.timedelta(days=self.audit_days) if self.audit_days is not None else None
        )
        return revision_cutoff, audit_cutoff

    def deleted_cutoff(self, now: dt.datetime) -> dt.datetime | None:
        """Deleted objects whose deletion is older than this lose their remaining revisions."""
        return max((c for c in self.cutoffs(now) if c is not None), default=None)
