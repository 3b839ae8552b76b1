"""A work queue in the style of client-go's: each key is queued at most once, never processed by two
workers at once, and re-queued with exponential backoff when its reconcile fails.

Keys queued ``later`` (the periodic resync's: every object, looked at again in case something was
missed) wait behind every change queued meanwhile. A resync of thousands of unchanged objects
takes seconds of work (every 300 s by default), and a user's change must not wait for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)
NOW, LATER = 0, 1  # the two lanes: changes, then what only the resync queued
logger = logging.getLogger(__name__)


class QueueKey(NamedTuple):
    """What the operator's queue holds: one object to reconcile, by kind.

    ``kind`` is a Ferry kind (``ferry.domain.kinds``) or ``FlagSet``, whose ``namespace`` is the
    target namespace of a ``ferry-flags`` ConfigMap and whose ``name`` is empty.
    """

    kind: str
    namespace: str
    name: str


class Requeue(Exception):
    """Raised by a reconcile to be retried with backoff (the cause was already reported)."""


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        return float(min(self.maximum, self.initial * self.factor ** max(0, failures - 1)))


@dataclass
class WorkQueue(Generic[K]):
    backoff: Backoff = field(default_factory=Backoff)
    waited: Callable[[K, float], None] | None = None
    """Told, as each key is taken, how many seconds it waited since it was queued (client-go's
    ``workqueue_queue_duration_seconds``): a change reaches workloads late either because the
    reconcile is slow or because the key waited behind others, and only this tells them apart."""
    # (lane, order, key): a key may have a stale entry left in the later lane after it moved
    # forward; a worker skips entries whose key is no longer waiting or is being processed.
    _queue: asyncio.PriorityQueue[tuple[int, int, K]] = field(default_factory=asyncio.PriorityQueue)
    _order: Iterator[int] = field(default_factory=itertools.count)
    _dirty: dict[K, float] = field(default_factory=dict)  # key → when it was queued
    _later: set[K] = field(default_factory=set)  # waiting keys only the resync asked for
    _processing: set[K] = field(default_factory=set)
    _failures: dict[K, int] = field(default_factory=dict)
    _timers: dict[K, asyncio.TimerHandle] = field(default_factory=dict)

    def add(self, key: K, *, later: bool = False) -> None:
        """Queue ``key``; ``later``: behind every change (the resync). A key already waiting
        keeps its place, except that a change to a key waiting ``later`` moves it forward."""
        if key in self._dirty:
            if later or key not in self._later:
                return
            self._later.discard(key)
        else:
            self._dirty[key] = time.monotonic()
            if later:
                self._later.add(key)
        if key not in self._processing:
            self._put(key)

    def _put(self, key: K) -> None:
        lane = LATER if key in self._later else NOW
        self._queue.put_nowait((lane, next(self._order), key))

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` in ``delay`` seconds; a key already waiting keeps the earlier time (a
        retry after a failure is never held back by a distant scheduled refresh)."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        if existing is not None:
            if existing.when() <= loop.time() + delay:
                return
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        return len(self._dirty)

    def idle(self) -> bool:
        return not self._dirty and not self._processing and not self._timers

    async def run(self, reconcile: Callable[[K], Awaitable[None]], workers: int) -> None:
        await asyncio.gather(*(self._worker(reconcile) for _ in range(workers)))

    async def _worker(self, reconcile: Callable[[K], Awaitable[None]]) -> None:
        while True:
            *_, key = await self._queue.get()
            if key not in self._dirty or key in self._processing:
                continue  # left behind when the key moved forward; or re-queued when done
            queued = self._dirty.pop(key)
            self._later.discard(key)
            if self.waited is not None:
                self.waited(key, time.monotonic() - queued)
            self._processing.add(key)
            try:
                await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = self.backoff.delay(failures)
                if not isinstance(exc, Requeue):
                    logger.exception("reconcile of %s failed; retrying in %.1fs", key, delay)
                self.add_after(key, delay)
            else:
                self._failures.pop(key, None)
            finally:
                self._processing.discard(key)
                if key in self._dirty:  # changed while we worked on it: go again
                    self._put(key)
