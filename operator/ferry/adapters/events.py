"""Kubernetes Events, recorded the way client-go's event broadcaster records them.

An Event says what happened to an object (``kubectl describe`` shows it); it is informative and
never the record of anything (revisions are in PostgreSQL, state is in ``status``). So, as in
client-go (``tools/record``: a channel of ``maxQueuedEvents`` = 1000 drained by one goroutine
per sink):

* :meth:`EventRecorder.record` never waits: the reconcile that says something goes on at once.
* **One writer** sends them in order, one at a time. Thousands of new objects at once then cost
  one connection and a steady trickle of Event writes behind the work, not one task and one
  connection per Event competing with the ConfigMap and status writes they describe (measured
  in docs/benchmarks.md, "Reconciliation": 5,000 new entries).
* **At most** :data:`MAX_QUEUED` wait. Past that an Event is dropped, counted in
  ``ferry_events_dropped_total`` and logged once per burst, never blocking or failing a
  reconcile. Decision: docs/decisions/0024-admission-and-events-off-the-reconcile-path.md.
* **Behind the work** while reconciles wait (:attr:`EventRecorder.busy`): one Event per
  :data:`BUSY_INTERVAL` at most, the rest as soon as the work queue is empty. In a burst the
  writes that make objects Ready get the API server; the Events describing them follow
  (docs/decisions/0030-events-behind-the-work.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from ferry import metrics
from ferry.domain import kinds

logger = logging.getLogger(__name__)

#: Events waiting to be written at most (client-go's ``maxQueuedEvents``).
MAX_QUEUED = 1000
#: While reconciles wait, the writer leaves at least this long (seconds) between two Events.
BUSY_INTERVAL = 0.1
#: How often a writer held back by a busy queue looks whether it has emptied (seconds).
BUSY_POLL = 0.02
#: Longest message kept (the API server stores up to 1 KiB comfortably; kubectl shows one line).
MAX_MESSAGE = 1024


def event_for(
    involved: Mapping[str, Any], *, type: str, reason: str, message: str, at: dt.datetime
) -> Event:
    """A core/v1 Event about ``involved`` (kind, name, namespace, uid), as ``kubectl describe``
    shows them."""
    namespace = involved["namespace"]
    return Event(
        metadata=ObjectMeta(
            name=f"{involved['name']}.{uuid.uuid4().hex[:12]}", namespace=namespace
        ),
        involvedObject=ObjectReference(
            apiVersion=involved.get("apiVersion", kinds.API_VERSION),
            kind=involved["kind"],
            name=involved["name"],
            namespace=namespace,
            uid=involved.get("uid"),
        ),
        type=type,
        reason=reason,
        message=message[:MAX_MESSAGE],
        source=EventSource(component="ferry"),
        firstTimestamp=at,
        lastTimestamp=at,
        count=1,
        reportingComponent="ferry",
    )


class EventRecorder:
    """Records Events without waiting; one background writer sends them (see the module)."""

    def __init__(
        self,
        client: AsyncClient,
        max_queued: int = MAX_QUEUED,
        busy_interval: float = BUSY_INTERVAL,
    ) -> None:
        self._client = client
        self._busy_interval = busy_interval
        self._last_sent = float("-inf")
        self.busy: Callable[[], bool] = lambda: False
        """Whether reconciles are waiting (the operator sets it to its work queue's state)."""
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queued)
        self._writer: asyncio.Task[None] | None = None
        self._dropping = False

    def record(self, involved: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
        """Queue an Event for ``involved``; dropped (and counted) if :data:`MAX_QUEUED` wait."""
        event = event_for(
            involved, type=type, reason=reason, message=message, at=dt.datetime.now(dt.UTC)
        )
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()
            if not self._dropping:
                logger.warning(
                    "more than %d Events waiting to be written: dropping new ones until the"
                    " queue drains (ferry_events_dropped_total counts them)",
                    self._queue.maxsize,
                )
            self._dropping = True
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="ferry-events")

    async def _write(self) -> None:
        while True:
            event = await self._queue.get()
            # Events are informative; losing one must never stop the writer.
            try:
                await self._behind_the_work()
                with contextlib.suppress(ApiError, httpx.TransportError):
                    await self._client.create(event)
            finally:
                self._queue.task_done()
            if self._queue.empty():
                self._dropping = False

    async def _behind_the_work(self) -> None:
        """While reconciles wait, send the next Event no sooner than :data:`BUSY_INTERVAL` after
        the last one (or as soon as the work queue is empty). An Event costs the API server about
        what the ConfigMap write it describes costs; in a burst of thousands of changes the
        objects are Ready sooner without that competition, and their Events are kept (up to
        :data:`MAX_QUEUED`) and sent when the burst is over. Idle, nothing waits."""
        loop = asyncio.get_running_loop()
        deadline = self._last_sent + self._busy_interval
        while self.busy() and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(BUSY_POLL, left))
        self._last_sent = loop.time()

    async def close(self, flush_seconds: float = 2.0) -> None:
        """Send what is queued (for at most ``flush_seconds``), then stop the writer."""
        self.busy = lambda: False  # stopping: no reconcile will go first any more
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_seconds):
                    await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
