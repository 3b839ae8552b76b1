"""Carrying out placement decisions: write, keep or refuse one object in one target namespace.

The decisions are pure (``ferry.domain.placement``); this is the one place that turns them into
API calls, so ConfigEntry → ConfigMap, ConfigEntry → Secret and FeatureFlags → ``ferry-flags``
are written, refused and reported the same way (docs/decisions/0012-placement.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lightkube import ApiError

from ferry import metrics
from ferry.adapters.kube import Kube
from ferry.domain.placement import (
    Action,
    Decision,
    Desired,
    Observed,
    TargetResult,
    apply_failed,
    conflict,
    decide,
)
from ferry.reconcile.reporting import Reporter, Source

#: API errors that no retry will fix for this content (forbidden, namespace gone, refused by
#: validation): reported in the target's status line instead of retried.
PERMANENT = (403, 404, 422)


@dataclass(frozen=True)
class Placed:
    """The outcome of :meth:`Placer.place`: what was decided and, if it failed, why."""

    decision: Decision
    failure: TargetResult | None = None

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
            await self.kube.apply(desired)
        except ApiError as exc:
            if exc.status.code in PERMANENT:
                failure = apply_failed(desired.namespace, str(exc.status.message), status_name)
                return Placed(decision, failure)
            raise
        if decision.drift:
            metrics.DRIFT.inc()
            for report, source in sources:
                report.drift_corrected(source, desired.describe(), decision.drift)
        return Placed(decision)

    async def remove(self, kind: str, namespace: str, name: str) -> None:
        await self.kube.delete(kind, namespace, name)
