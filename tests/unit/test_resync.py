"""The periodic resync (ferry.reconcile.resync): every key once per round, spread over the round
instead of queued in one burst."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from ferry.reconcile.resync import resync


async def test_each_round_queues_every_key_once_spread_over_half_the_period() -> None:
    keys = [f"entry-{i}" for i in range(40)]
    queued: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    period, tick = 0.4, 0.01
    started = loop.time()

    def enqueue(key: str) -> None:
        queued.append((loop.time(), key))

    await resync_until(lambda: keys, enqueue, period, tick, lambda: len(queued) >= 2 * len(keys))

    first, second = queued[: len(keys)], queued[len(keys) : 2 * len(keys)]
    assert [key for _, key in first] == keys and [key for _, key in second] == keys
    # The first round begins a period after the start, and the second a period after the first.
    assert first[0][0] - started >= period
    assert second[0][0] - first[0][0] >= period * 0.99
    # Spread: 40 keys over 0.2 s in ticks of 0.01 s are two keys a tick, not one burst.
    times = [at for at, _ in first]
    assert times[-1] - times[0] >= 0.9 * (period / 2 - tick)
    assert max(sum(1 for t in times if abs(t - at) < tick / 2) for at in times) <= 2


async def test_a_round_takes_its_keys_when_it_begins() -> None:
    """An object created after a round began waits for the next round (its own watch event has
    queued it already); one deleted meanwhile is still queued, and its reconcile finds nothing."""
    keys = ["a", "b"]
    queued: list[str] = []

    def enqueue(key: str) -> None:
        queued.append(key)
        keys.append("created-meanwhile")

    await resync_until(lambda: list(keys), enqueue, 0.05, 0.01, lambda: len(queued) >= 3)
    # The first round: the two keys it began with; the next begins with "a" again.
    assert queued[:3] == ["a", "b", "a"]


async def resync_until(
    keys: Callable[[], Sequence[str]],
    enqueue: Callable[[str], None],
    period: float,
    tick: float,
    done: Callable[[], bool],
) -> None:
    """Run :func:`resync` until ``done()`` (within 10 s), then stop it."""
    task = asyncio.create_task(resync(keys, enqueue, period, tick=tick))
    try:
        async with asyncio.timeout(10):
            while not done():
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
