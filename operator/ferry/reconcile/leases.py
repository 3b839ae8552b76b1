"""Which shards this replica reconciles now: every one (no leader election), or those whose Lease
it holds (``leader.lease_namespace`` set). The rules are in :mod:`ferry.domain.shards`; this module
runs them against the Leases (``ferry.adapters.leases``) and tells the runtime what changed.

Two loops per replica. One renews each Lease it holds once ``renew_seconds`` have passed, each
renewal a task of its own, so a slow or failing Lease never delays the renewal of another. The
other, every ``retry_seconds``, reads the Leases it does not hold, takes at most one free shard (so
replicas that start together spread out), and, holding nothing while another replica holds two
or more, asks that replica for one. A held shard is dropped the moment its renewal deadline
passes, by a timer, whatever the loops are doing: reconciles of that shard then in flight are
cancelled, as if the process had died there (which reconciles survive: record before write,
idempotent revisions). A shard handed over on request is written to its new holder only once
those cancelled reconciles have ended, so nothing they were sending arrives after the new
holder's first writes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ferry import metrics
from ferry.adapters.leases import LeaseConflict, Leases, wall_clock
from ferry.domain.shards import (
    LeaseRecord,
    Observation,
    claim,
    handed_over,
    handover_target,
    handover_wanted,
    holder_deadline,
    lease_name,
    lease_seconds,
    live_holder,
    may_acquire,
    observe,
    released,
    renewed,
    requested,
    shard_of,
    shard_of_key,
)
from ferry.reconcile.workqueue import QueueKey
from ferry.settings import LeaderSettings

logger = logging.getLogger(__name__)


class Shards:
    """No leader election: one shard, always held by this process."""

    count = 1

    def __init__(self) -> None:
        metrics.SHARDS.set(self.count)
        metrics.SHARDS_HELD.set(self.count)

    def shard_of(self, key: QueueKey) -> int:
        return shard_of_key(key.kind, key.namespace, self.count)

    def holds(self, shard: int) -> bool:
        return True

    async def while_held(self, shard: int, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (a reconcile of a key of ``shard``); with leases, cancelled if the shard
        is lost meanwhile."""
        await work

    async def run(self) -> None:
        """Keep the Leases (nothing to keep here)."""

    async def release(self) -> None:
        """Give up every held shard at a clean stop."""


@dataclass
class _Hold:
    record: LeaseRecord
    resource_version: str
    sent_at: float  # when the write that last extended the hold was sent (monotonic)
    deadline: float
    timer: asyncio.TimerHandle
    next_renewal: float  # renew_seconds after sent_at; retry_seconds after a failed renewal


class LeaseManager(Shards):
    """Shards held through Kubernetes Leases."""

    def __init__(
        self,
        leases: Leases,
        settings: LeaderSettings,
        identity: str,
        on_acquired: Callable[[int], None],
    ) -> None:
        self.leases = leases
        self.count = settings.shards
        self.identity = identity
        self.duration = settings.lease_duration_seconds
        self.renew = settings.renew_seconds
        self.retry = settings.retry_seconds
        self.on_acquired = on_acquired
        self.names = [
            lease_name(settings.lease_name_prefix, i, self.count) for i in range(self.count)
        ]
        # Try shards in an order of our own, so replicas starting together want different ones.
        first = shard_of(identity, self.count)
        self._order = [(first + i) % self.count for i in range(self.count)]
        self._holds: dict[int, _Hold] = {}
        self._observed: dict[int, Observation] = {}
        self._told: dict[int, str | None] = {}  # the holder last logged per shard
        self._unreadable: set[int] = set()
        self._inflight: dict[int, set[asyncio.Future[None]]] = {}
        self._dropped: set[asyncio.Future[None]] = set()  # cancelled because the shard was lost
        self._handing: dict[int, asyncio.Task[None]] = {}  # given up, not yet written over
        self._renewing: dict[int, asyncio.Task[None]] = {}  # renewals on their way
        metrics.SHARDS.set(self.count)
        metrics.SHARDS_HELD.set(0)

    def where(self, shard: int) -> str:
        return f"shard {shard} of {self.count} (Lease {self.leases.namespace}/{self.names[shard]})"

    # ------------------------------------------------------------------------- the runtime's side
    def holds(self, shard: int) -> bool:
        hold = self._holds.get(shard)
        return hold is not None and time.monotonic() < hold.deadline

    async def while_held(self, shard: int, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        running = self._inflight.setdefault(shard, set())
        running.add(task)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task in self._dropped and (current is None or not current.cancelling()):
                return  # the shard was lost mid-reconcile: dropped, the new holder redoes it
            raise
        finally:
            running.discard(task)
            self._dropped.discard(task)

    # ----------------------------------------------------------------------------- the loop
    async def run(self) -> None:
        logger.info(
            "leader election: %s shard(s), Leases %s in namespace %s; this replica is %r",
            self.count,
            self.names[0] if self.count == 1 else f"{self.names[0]} … {self.names[-1]}",
            self.leases.namespace,
            self.identity,
        )
        try:
            await asyncio.gather(self._keep_held(), self._keep_looking())
        finally:
            for task in list(self._renewing.values()):
                task.cancel()

    async def _keep_held(self) -> None:
        """Renew each held Lease when it is due, each in a task of its own: one Lease that
        answers slowly (or not) never makes another wait for its turn."""
        while True:
            now = time.monotonic()
            for shard, hold in list(self._holds.items()):
                if now >= hold.next_renewal and shard not in self._renewing:
                    task = asyncio.create_task(self._renew(shard), name=f"ferry-renew-{shard}")
                    self._renewing[shard] = task
                    task.add_done_callback(functools.partial(self._renewed, shard))
            waiting = [h.next_renewal for s, h in self._holds.items() if s not in self._renewing]
            await asyncio.sleep(max(0.05, min([now + self.retry, *waiting]) - now))

    def _renewed(self, shard: int, task: asyncio.Task[None]) -> None:
        self._renewing.pop(shard, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The deadline timer guards the hold; the next due renewal tries again.
            logger.error("%s: unexpected error renewing", self.where(shard), exc_info=error)

    async def _keep_looking(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:  # the loop must outlive any surprise
                logger.exception("leader election: unexpected error; trying again")
            await asyncio.sleep(self.retry)

    def _unheld(self) -> list[int]:
        """Shards neither held nor being handed over by this replica."""
        return [s for s in range(self.count) if s not in self._holds and s not in self._handing]

    async def _tick(self) -> None:
        await asyncio.gather(*(self._look(s) for s in self._unheld()))
        now = time.monotonic()
        held = len(self._holds)
        unheld = self._unheld()
        for shard in self._order:
            observation = self._observed.get(shard)
            if shard not in unheld or observation is None:
                continue
            free = may_acquire(observation, self.identity, now, held, patience=self.retry)
            if free and await self._acquire(shard, observation):
                return  # one at a time: another replica starting now may want the next one
        candidates = {s: o for s, o in self._observed.items() if s not in self._holds}
        wanted = handover_target(candidates, self.identity, held, now)
        if wanted is not None:
            await self._request(wanted, candidates[wanted])

    async def _look(self, shard: int) -> None:
        try:
            stored = await self.leases.get(self.names[shard])
        except Exception as exc:
            if shard not in self._unreadable:  # once per outage, not every retry
                logger.warning("%s: cannot read it: %s", self.where(shard), exc)
                self._unreadable.add(shard)
            return
        self._unreadable.discard(shard)
        now = time.monotonic()
        observation = observe(
            self._observed.get(shard), stored.record, stored.resource_version, now
        )
        self._observed[shard] = observation
        holder = live_holder(observation, now)
        if holder != self._told.get(shard, "?"):
            self._told[shard] = holder
            if holder is None:
                logger.info("%s is free", self.where(shard))
            elif holder != self.identity:
                logger.info(
                    "%s is held by %r; this replica stands by for it", self.where(shard), holder
                )

    async def _acquire(self, shard: int, observation: Observation) -> bool:
        """Take the shard's Lease; whether this replica holds it now (a Lease that cannot be
        written does not keep the loop from the next free one)."""
        previous = observation.record
        record = claim(previous, self.identity, lease_seconds(self.duration), wall_clock())
        sent = time.monotonic()
        try:
            if previous is None:
                version = await self.leases.create(self.names[shard], record)
            else:
                version = await self.leases.update(
                    self.names[shard], record, observation.resource_version
                )
        except LeaseConflict:
            self._observed.pop(shard, None)  # someone was quicker: look again next time
            return False
        except Exception as exc:
            logger.warning("%s: cannot take it: %s", self.where(shard), exc)
            return False
        self._observed.pop(shard, None)
        if not self._extend(shard, record, version, sent):
            return False
        before = previous.holder if previous is not None else ""
        how = (
            "it named this replica: handed over, or held before a restart"
            if before == self.identity
            else (f"after {before!r}" if before else "free")
        )
        self._told[shard] = self.identity
        logger.info(
            "%s acquired by %r (%s); reconciling its namespaces",
            self.where(shard),
            self.identity,
            how,
        )
        self.on_acquired(shard)
        return True

    async def _renew(self, shard: int) -> None:
        hold = self._holds.get(shard)
        if hold is None:  # given up (deadline) since the round began
            return
        record = renewed(hold.record, wall_clock())
        sent = time.monotonic()
        try:
            version = await self.leases.update(self.names[shard], record, hold.resource_version)
        except LeaseConflict:
            await self._after_conflict(shard)
            return
        except Exception as exc:
            hold.next_renewal = time.monotonic() + self.retry
            logger.warning(
                "%s: renewal failed (%s); still held for %.1fs",
                self.where(shard),
                exc,
                max(0.0, hold.deadline - time.monotonic()),
            )
            return
        if self._holds.get(shard) is hold:  # not lost while the renewal was on its way
            self._extend(shard, record, version, sent)

    async def _after_conflict(self, shard: int) -> None:
        """Our renewal met a newer version of the Lease: a handover request, or a new holder."""
        name = self.names[shard]
        if (hold := self._holds.get(shard)) is not None:
            hold.next_renewal = time.monotonic() + self.retry  # unless renewed below
        try:
            stored = await self.leases.get(name)
        except Exception as exc:
            logger.warning("%s: cannot read it after a conflict: %s", self.where(shard), exc)
            return
        record = stored.record
        if record is None or record.holder != self.identity:
            holder = record.holder if record is not None else ""
            self._lose(shard, f"the Lease now names {holder!r}" if holder else "the Lease is gone")
            return
        to = handover_wanted(record, self.identity, len(self._holds))
        if to is not None:
            self._lose(shard, f"handing it over to {to!r}", warn=False)  # stop first
            # Every reconcile of the shard not yet ended: cancelled just now, or by the deadline
            # timer while the read above was on its way.
            stopping = list(self._inflight.get(shard, ()))
            self._handing[shard] = asyncio.create_task(
                self._hand_over(shard, to, record, stored.resource_version, stopping)
            )
            return
        record = renewed(record, wall_clock())
        sent = time.monotonic()
        try:
            version = await self.leases.update(name, record, stored.resource_version)
        except Exception as exc:
            logger.warning("%s: renewal failed (%s)", self.where(shard), exc)
            return
        if shard in self._holds:
            self._extend(shard, record, version, sent)

    async def _hand_over(
        self,
        shard: int,
        to: str,
        record: LeaseRecord,
        version: str | None,
        stopping: list[asyncio.Future[None]],
    ) -> None:
        """Write ``to`` into the Lease once the shard's cancelled reconciles have ended (at most
        ``renew_seconds``): what they were writing (a ConfigMap, an Event) then reaches the API
        server before the new holder starts on the shard."""
        try:
            if stopping:
                await asyncio.wait(stopping, timeout=self.renew)
            await self.leases.update(
                self.names[shard], handed_over(record, to, wall_clock()), version
            )
        except Exception as exc:  # still ours in the Lease: taken back at the next look
            logger.warning("%s: handing over to %r failed: %s", self.where(shard), to, exc)
        else:
            logger.info("%s handed over to %r", self.where(shard), to)
        finally:
            self._handing.pop(shard, None)

    async def _request(self, shard: int, observation: Observation) -> None:
        assert observation.record is not None
        try:
            await self.leases.update(
                self.names[shard],
                requested(observation.record, self.identity),
                observation.resource_version,
            )
        except LeaseConflict:
            return  # renewed meanwhile: ask again at the next look
        except Exception as exc:
            logger.warning("%s: cannot ask for it: %s", self.where(shard), exc)
            return
        logger.info(
            "%s: asked %r to hand it over (it holds more shards than this replica)",
            self.where(shard),
            observation.record.holder,
        )

    # ----------------------------------------------------------------------------- holding
    def _extend(self, shard: int, record: LeaseRecord, version: str, sent: float) -> bool:
        """Hold ``shard`` until ``renew`` seconds before anyone else could take it."""
        deadline = holder_deadline(sent, self.duration, self.renew)
        now = time.monotonic()
        if now >= deadline:  # the write took so long that the hold is already over
            return False
        previous = self._holds.get(shard)
        if previous is not None:
            previous.timer.cancel()
        timer = asyncio.get_running_loop().call_later(deadline - now, self._expire, shard, deadline)
        self._holds[shard] = _Hold(record, version, sent, deadline, timer, sent + self.renew)
        metrics.SHARDS_HELD.set(len(self._holds))
        return True

    def _expire(self, shard: int, deadline: float) -> None:
        hold = self._holds.get(shard)
        if hold is not None and hold.deadline == deadline:
            self._lose(shard, f"not renewed within {self.duration - self.renew:g}s")

    def _lose(self, shard: int, why: str, *, warn: bool = True) -> None:
        """Stop reconciling ``shard`` now: its reconciles in flight are cancelled."""
        hold = self._holds.pop(shard, None)
        if hold is None:
            return
        hold.timer.cancel()
        for task in self._inflight.get(shard, ()):
            self._dropped.add(task)
            task.cancel()
        self._observed.pop(shard, None)
        self._told.pop(shard, None)
        metrics.SHARDS_HELD.set(len(self._holds))
        log = logger.warning if warn else logger.info
        log("%s given up: %s; stopped reconciling its namespaces", self.where(shard), why)

    async def release(self) -> None:
        """A clean stop: give up every Lease that names this replica, so another replica takes it
        at once. Read from the API server, not from what this replica believes it holds: the
        loops were cancelled, perhaps between a write that took a Lease and noting it, or while
        handing one over. All at once, each bounded by the client's timeout."""
        for shard in list(self._holds):
            self._lose(shard, "stopping", warn=False)
        pending = [*self._handing.values(), *self._renewing.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        shards = range(self.count)
        outcomes = await asyncio.gather(
            *(self._release(shard) for shard in shards), return_exceptions=True
        )
        for shard, outcome in zip(shards, outcomes, strict=True):
            if isinstance(outcome, BaseException):  # it expires after lease_duration_seconds
                logger.warning("%s: cannot release it: %s", self.where(shard), outcome)
            elif outcome:
                logger.info("%s released", self.where(shard))
        await self.leases.close()

    async def _release(self, shard: int) -> bool:
        """Release the shard's Lease if it names this replica (True: released)."""
        name = self.names[shard]
        for _ in range(2):  # once more if a handover request came in between
            stored = await self.leases.get(name)
            if stored.record is None or stored.record.holder != self.identity:
                return False
            try:
                await self.leases.update(
                    name, released(stored.record, wall_clock()), stored.resource_version
                )
            except LeaseConflict:
                continue
            return True
        raise LeaseConflict(f"Lease {self.leases.namespace}/{name} kept changing")
