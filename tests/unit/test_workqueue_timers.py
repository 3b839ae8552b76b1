"""WorkQueue.add_after keeps the earliest time for a key (ferry.reconcile.workqueue)."""

from __future__ import annotations

import asyncio

from ferry.reconcile.workqueue import WorkQueue


async def test_a_sooner_retry_replaces_a_distant_scheduled_one() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("entry", 3600)  # the next secret refresh
    queue.add_after("entry", 0.01)  # a retry after a failure
    await asyncio.sleep(0.05)
    assert len(queue) == 1 and not queue.idle()


async def test_a_later_time_never_postpones_an_earlier_one() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("entry", 0.01)
    queue.add_after("entry", 3600)
    await asyncio.sleep(0.05)
    assert len(queue) == 1
