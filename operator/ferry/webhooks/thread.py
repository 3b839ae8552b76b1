"""The admission webhooks on their own thread and event loop, where reconciling cannot delay them.

Every ``kubectl apply`` of a Ferry object waits for two webhook calls. Answered on the loop that
also reconciles, a call waits behind whatever that loop is doing (a burst of status writes, a
namespace's fan-out): the API server saw a 0.9 ms stamp take 8.9 ms (docs/benchmarks.md,
"Admission latency"). Here the server, its handlers, their Kubernetes client (live reads) and
their validation workers (:mod:`ferry.reconcile.isolation`, a pool of their own) all belong to a
loop that does nothing else. What is shared with the reconcilers is read-only: the indexes of
:class:`~ferry.reconcile.world.World` (see :meth:`Admission._check` for how a read racing a
write is handled) and the Prometheus metrics (thread-safe).

A thread, not a process: the indexes and ``/metrics`` stay one, and the handlers no longer go
through Kopf's per-request machinery, so what remains shared is the GIL. While the reconcile
thread runs Python code, the admission thread waits for it at most Python's switch interval per
hand-over; measured (docs/benchmarks.md, "Admission latency"), the API server now sees Ferry's
stamp call take what a no-op webhook's takes at p50 (3.4 ms; 8.9 ms on the reconcile loop).
A process of its own would also take the GIL out of the tail, at the price of its own
watches of every entry and schema and of a second ``/metrics``. Measured across runs later, a
stored apply still waited for the reconciling process, and so in a cluster this thread runs in
``ferry webhooks`` (:mod:`ferry.handlers.admission`), a process that reconciles nothing, and
``ferry run`` serves no webhook (decision 0035); ``ferry run --webhook-port`` keeps the
one-process layout. Decision: docs/decisions/0024-admission-and-events-off-the-reconcile-path.md.

On a busy node the two threads also wait for a CPU: the reconcile thread runs at a lower CPU
priority (:data:`RECONCILE_NICENESS`), so the admission thread gets one first (decision 0026).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable

from lightkube import AsyncClient

from ferry.reconcile import isolation
from ferry.webhooks.handlers import Admission
from ferry.webhooks.server import WebhookServer

logger = logging.getLogger(__name__)

#: How long stopping waits for the thread to close its listener, client and workers.
STOP_SECONDS = 10.0
#: How much lower the reconcile thread's CPU priority is than the admission thread's (Linux
#: ``nice``, per thread). On a busy node both threads wait for a CPU as well as for the GIL, and
#: a person waits on admission. Measured with ``bench/admission_latency.py`` (stored applies,
#: p99 beyond no-op webhooks): median +14 ms against +26 ms at 0 over four runs each, with
#: a spread as large as the effect; 5,000 new entries Ready no slower (decision 0026).
RECONCILE_NICENESS = 5


class AdmissionThread:
    """Runs ``server`` answering with ``admission`` on a thread of its own (see the module).

    ``make_client`` builds the Kubernetes client for live reads on that thread's loop;
    ``workers``/``timeout_seconds`` size its validation pool (``validation.*`` settings).
    ``on_failure`` is called (from the thread) if serving ends other than by :meth:`stop`: the
    operator then stops, as it would if any other part of it could no longer work.
    """

    def __init__(
        self,
        server: WebhookServer,
        admission: Admission,
        make_client: Callable[[], AsyncClient],
        *,
        workers: int,
        timeout_seconds: float,
        on_failure: Callable[[], None],
    ) -> None:
        self.server = server
        self.admission = admission
        self._make_client = make_client
        self._workers, self._timeout = workers, timeout_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="ferry-admission", daemon=True)
        self._on_failure = on_failure

    def start(self) -> None:
        """Start serving; client configs reach :meth:`WebhookServer.client_configs` on the
        calling (running) loop. From then on the calling thread runs :data:`RECONCILE_NICENESS`
        below the admission thread (see :func:`lower_priority`): in ``ferry run`` the reconcile
        loop, in ``ferry webhooks`` the loop keeping the indexes, which a stored change's watch
        events keep busy while the admission thread answers the next request."""
        self.server.owner = asyncio.get_running_loop()
        self._thread.start()  # first: a thread starts at its creator's priority
        lower_priority(RECONCILE_NICENESS)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except asyncio.CancelledError:
            return  # stop()
        except Exception:
            logger.exception("the admission webhooks can no longer be served: stopping")
        self._on_failure()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        # At the operator's priority: the API server, and a user's kubectl, wait on it; and
        # provably cheap entry checks answered on this thread, without a worker round trip.
        pool = isolation.Isolation(niceness=0, inline=isolation.Inline(), name="admission")
        pool.configure(self._workers, self._timeout)
        pool.start()
        self.admission.pool = pool
        self.admission.client = self._make_client()
        try:
            async for _ in self.server(self.admission):
                pass  # announced to the owner loop by the server itself
        finally:
            await self.admission.client.close()
            await pool.close()

    async def stop(self) -> None:
        """Stop serving and wait (at most :data:`STOP_SECONDS`) for the thread to end."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)
        await asyncio.to_thread(self._thread.join, STOP_SECONDS)


def lower_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority by ``niceness`` (Linux: ``setpriority`` on its
    thread id, so only this thread and what it starts later). Raising it back would need
    ``CAP_SYS_NICE``, which the operator does not have, so this is done once, at start-up.
    Elsewhere, or if refused, the thread keeps its priority (logged)."""
    if sys.platform != "linux" or niceness <= 0:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except OSError as error:
        logger.warning("could not lower the calling thread's priority: %s", error)
