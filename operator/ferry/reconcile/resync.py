"""The periodic resync: every object looked at again now and then, a few at a time.

The resync is a safety net under the watches (an event missed, a write lost on the way, a
Vault secret rotated); nobody waits for it. Queued all at once, a few thousand unchanged
entries are seconds of the reconcile thread's CPU in one burst, and a user's change arriving
then waits for that burst although its key goes first in the queue (the queue's later lane,
decision 0003): a change's reconcile awaits its writes, and meanwhile the other workers run
resync reconciles on the same event loop, under the same GIL as the admission thread. Over
3,000 isolated applies into a growing cluster (docs/benchmarks.md, runs 23-25) Ferry's apply →
ConfigMap p99 was 18.8 ms with the burst, 17.2 and 15.7 ms spread out (1.39 times the no-op
controller's, then 1.05 and 1.13 times). So each round's keys are queued spread over
:data:`SPREAD` of the period, a few every :data:`TICK`: the same work, at a rate a change
hardly meets.

Safe to spread: nothing depends on when within its period an object is looked at again; a
change is never queued through here (the watches queue it at once), and an object deleted
before its turn is a reconcile of nothing, as it was when keys waited in the queue.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

K = TypeVar("K")

#: Share of the period over which one round's keys are queued (the rest is slack, so a round
#: ends before the next begins even when the reconciles lag behind the queueing).
SPREAD = 0.5
#: Seconds between two batches of keys: a round of N keys over a window W queues
#: ``ceil(N * TICK / W)`` keys per tick.
TICK = 0.1


async def resync(
    keys: Callable[[], Sequence[K]],
    enqueue: Callable[[K], None],
    period: float,
    *,
    spread: float = SPREAD,
    tick: float = TICK,
) -> None:
    """Every ``period`` seconds, ``enqueue`` each of ``keys()`` (read when the round begins),
    spread over ``spread * period`` seconds. Rounds begin a period apart, the first one period
    from now. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    window = spread * period
    next_round = loop.time() + period
    while True:
        await asyncio.sleep(max(0.0, next_round - loop.time()))
        next_round += period
        round_keys = keys()
        per_tick = max(1, math.ceil(len(round_keys) * tick / window))
        for start in range(0, len(round_keys), per_tick):
            if start:
                await asyncio.sleep(tick)
            for key in round_keys[start : start + per_tick]:
                enqueue(key)
