"""Carrying out placement decisions: write, keep or refuse one object in one target namespace.

The decisions are pure (``ferry.domain.placement``); this is the one place that turns them into
API calls, so ConfigEntry → ConfigMap, ConfigEntry → Secret and FeatureFlags → ``ferry-flags``
are written, refused and reported the same way (docs/decisions/0012-placement.md).

Ownership is settled by the API server, not by the indexes, which may lag: where Ferry knows of
no object it *creates* (an AlreadyExists is someone's object, taken over only if it carries
Ferry's labels for the same source), and every update and delete names the object's uid as a
precondition (docs/decisions/0018-tenant-isolation.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lightkube import ApiError

from ferry import metrics
from ferry.adapters.kube import Kube, Live
from ferry.domain import labels as L
from ferry.domain.placement import (
    Action,
    Decision,
    Desired,
    Observed,
    TargetResult,
    apply_failed,
    conflict,
    decide,
    owns,
)
from ferry.reconcile.reporting import Reporter, Source
from ferry.reconcile.workqueue import Requeue

#: API errors that no retry will fix for this content (forbidden, namespace gone, refused by
#: validation): reported in the target's status line instead of retried.
PERMANENT = (403, 404, 422)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placed:
    """The outcome of :meth:`Placer.place`: what was decided and, if it failed, why."""

    decision: Decision
    failure: TargetResult | None = None
    uid: str | None = None
    """The uid of the object written (None when nothing was written)."""

    @property
    def written(self) -> bool:
        return self.decision.action is Action.WRITE and self.failure is None


class Placer:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def place(
        self,
        desired: Desired,
        observed: Observed | None,
        *,
        sources: Iterable[tuple[Reporter, Source]],
        was_synced: bool = False,
        status_name: str | None = None,
    ) -> Placed:
        """Bring one target in line with ``desired``.

        ``sources``: whom a drift correction is reported to (the entry, or every flag served in
        a ``ferry-flags``). ``status_name`` is the name a failure's status line carries.
        Transient API errors propagate (the reconcile is retried); permanent ones are returned.
        """
        decision = decide(desired, observed, was_synced=was_synced)
        if decision.action is Action.REFUSE:
            return Placed(decision, conflict(desired, status_name))
        if decision.action is Action.KEEP:
            return Placed(decision)
        try:
            uid = await self._write(desired, observed)
        except ApiError as exc:
            if exc.status.code in PERMANENT:
                failure = apply_failed(desired.namespace, str(exc.status.message), status_name)
                return Placed(decision, failure)
            raise
        if uid is None:  # someone else's object turned out to be there
            return Placed(decision, conflict(desired, status_name))
        if decision.drift:
            metrics.DRIFT.inc()
            for report, source in sources:
                report.drift_corrected(source, desired.describe(), decision.drift)
        return Placed(decision, uid=uid)

    async def _write(self, desired: Desired, observed: Observed | None) -> str | None:
        """Create or update, on the API server's word rather than the index's: returns the uid
        of the object now holding ``desired``, or None if the name is someone else's.

        * Nothing known there: **create**. An AlreadyExists means someone made it since the
          index looked: it is read, and taken over only if it carries Ferry's labels for the
          same source (:func:`owns`).
        * Ours: **update** that very object (the uid is a precondition). If it is gone, or is
          another object now, it is looked at again.
        """
        uid = observed.uid if observed is not None else None
        create = observed is None
        live: Live | None = None
        for _ in range(_ATTEMPTS):
            if create:
                try:
                    return await self.kube.create(desired)
                except ApiError as exc:
                    if exc.status.code != 409:
                        raise
                create = False  # someone's object is there: whose?
                uid = None
            if uid is None:
                live = await self.kube.read(desired.kind, desired.namespace, desired.name)
                if live is None:
                    create = True  # gone meanwhile
                    continue
                if not owns(desired, live.labels):
                    return None
                uid = live.uid
            try:
                await self.kube.update(desired, uid, live)
                return uid
            except ApiError as exc:
                if exc.status.code not in (404, 422):
                    raise
                if exc.status.code == 422 and live is not None and live.uid == uid:
                    raise  # refused for its content, not for being another object
                # Gone (404), or the uid test failed (422): deleted, perhaps made again by
                # someone else. Look again; without a fresh look nothing is written.
                uid = None
        # It kept changing under us: retried with backoff, from a fresh look.
        raise Requeue(f"{desired.describe()} changed while it was being written")

    async def remove(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Delete an object Ferry made; returns whether it did.

        With ``uid`` (the object the caller knows is Ferry's) the delete carries it as a
        precondition. Without, the object is read first and deleted only if it carries
        ``labels`` (default: Ferry's managed-by label), again with its uid as the precondition:
        either way, an object someone made under the same name in the meantime stays.
        """
        if uid is None:
            live = await self.kube.read(kind, namespace, name)
            if live is None:
                return False
            wanted = labels if labels is not None else {L.MANAGED_BY: L.MANAGED_BY_FERRY}
            if any((live.labels or {}).get(k) != v for k, v in wanted.items()):
                logger.warning("not deleting %s %s/%s: not Ferry's", kind, namespace, name)
                return False
            uid = live.uid
        return await self.kube.delete(kind, namespace, name, uid=uid)


#: Create/update attempts of one write while the object keeps changing under it.
_ATTEMPTS = 3
