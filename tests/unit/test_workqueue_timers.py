"""WorkQueue (ferry.reconcile.workqueue): add_after keeps the earliest time for a key; each key
is told how long it waited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

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


async def test_each_key_is_told_how_long_it_waited_from_when_it_was_first_queued() -> None:
    waits: list[tuple[str, float]] = []
    queue: WorkQueue[str] = WorkQueue(waited=lambda key, seconds: waits.append((key, seconds)))
    started, release = asyncio.Event(), asyncio.Event()

    async def reconcile(key: str) -> None:
        if key == "slow" and not started.is_set():
            started.set()
            await release.wait()

    async def meanwhile() -> None:
        await asyncio.wait_for(started.wait(), 5)
        queue.add("behind")  # waits for "slow" to end: one worker
        queue.add("slow")  # changed while it is being reconciled: goes again afterwards
        queue.add("slow")  # a second change before that is the same wait, not another
        await asyncio.sleep(0.2)
        release.set()

    queue.add("slow")
    await run_until_idle(queue, reconcile, meanwhile)
    assert [key for key, _ in waits] == ["slow", "behind", "slow"]
    first, behind, again = (seconds for _, seconds in waits)
    assert first < 0.1
    assert 0.2 <= behind < 5 and 0.2 <= again < 5


async def test_a_change_goes_ahead_of_what_the_resync_queued() -> None:
    """The resync queues every object; a change made meanwhile is reconciled before them, and a
    change to an object the resync already queued moves it forward (once)."""
    done: list[str] = []
    queue: WorkQueue[str] = WorkQueue()
    for key in ("r1", "r2", "r3", "changed-too"):
        queue.add(key, later=True)
    queue.add("change")
    queue.add("changed-too")  # moves forward, keeps one place
    queue.add("r1", later=True)  # already waiting: nothing changes

    async def reconcile(key: str) -> None:
        done.append(key)

    await run_until_idle(queue, reconcile)
    assert done == ["change", "changed-too", "r1", "r2", "r3"]


async def run_until_idle(
    queue: WorkQueue[str],
    reconcile: Callable[[str], Awaitable[None]],
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """One worker on ``queue`` until it is idle (``meanwhile`` runs first, beside the worker)."""
    worker = asyncio.create_task(queue.run(reconcile, workers=1))
    try:
        if meanwhile is not None:
            await meanwhile()
        async with asyncio.timeout(5):
            while not queue.idle():
                await asyncio.sleep(0.01)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
