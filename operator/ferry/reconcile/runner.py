"""One reconcile, measured and classified: the wrapper every reconciler runs its work in.

Kept in one place so that every kind counts results, times itself and treats Kubernetes'
everyday failures the same way: a conflict (409), throttling (429), a 5xx or a dropped
connection is expected now and then and is retried quietly with backoff; anything else is a
bug or an outage worth a traceback (the work queue logs it and retries too).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from ferry import metrics
from ferry.adapters.kube import is_transient
from ferry.reconcile.workqueue import Requeue

logger = logging.getLogger(__name__)


async def run(kind: str, what: str, work: Awaitable[None]) -> None:
    """Await ``work`` (the reconcile of ``what``, e.g. "ns/name") under ``kind``'s metrics."""
    with metrics.RECONCILE_SECONDS.labels(kind).time():
        try:
            await work
        except Requeue:
            metrics.RECONCILES.labels(kind, "requeued").inc()
            raise
        except Exception as exc:
            if not is_transient(exc):
                metrics.RECONCILES.labels(kind, "error").inc()
                raise
            metrics.RECONCILES.labels(kind, "requeued").inc()
            logger.warning("%s %s: %s; retrying", kind, what, exc)
            raise Requeue(str(exc)) from exc
        metrics.RECONCILES.labels(kind, "ok").inc()
