"""The Lease loop (ferry.reconcile.leases.LeaseManager) against Leases kept in memory, where the
timing of each call can be chosen: what no real API server does on demand (one Lease slow while
another answers at once, a write landing between two steps). The same loop against a real API
server: tests/integration/test_leases.py and test_ha.py."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from ferry.adapters.leases import LeaseConflict, StoredLease
from ferry.domain.shards import LeaseRecord, claim, lease_name, requested
from ferry.reconcile.leases import LeaseManager
from ferry.settings import LeaderSettings

#: Scaled down from the defaults (15 / 5 / 2 s) in the same proportions the settings allow.
SETTINGS = LeaderSettings(
    lease_namespace="ns", shards=2, lease_duration_seconds=1.5, renew_seconds=0.5, retry_seconds=0.2
)


class MemoryLeases:
    """Leases in a dict, with the adapter's interface and its resourceVersion preconditions.
    ``slow``: Lease names whose every call takes that long, and whose writes then fail as a
    call that times out does (reads answer, late). ``late``: Lease names whose updates take that
    long and then succeed."""

    namespace = "ns"

    def __init__(self, slow: dict[str, float] | None = None) -> None:
        self.stored: dict[str, tuple[LeaseRecord, str]] = {}
        self.writes: list[tuple[float, str, str]] = []  # (when, Lease, holder written)
        self.slow = slow or {}
        self.late: dict[str, float] = {}
        self._version = 0

    async def _maybe_slow(self, name: str, *, fail: bool = True) -> None:
        if name in self.slow:
            await asyncio.sleep(self.slow[name])
            if fail:
                raise TimeoutError(f"Lease {name}: no answer")

    def put(self, name: str, record: LeaseRecord) -> str:
        """Write as another party would (no precondition)."""
        self._version += 1
        self.stored[name] = (record, str(self._version))
        self.writes.append((time.monotonic(), name, record.holder))
        return str(self._version)

    async def get(self, name: str) -> StoredLease:
        await self._maybe_slow(name, fail=False)
        found = self.stored.get(name)
        return StoredLease(*found) if found else StoredLease(None, None)

    async def create(self, name: str, record: LeaseRecord) -> str:
        await self._maybe_slow(name)
        if name in self.stored:
            raise LeaseConflict("exists")
        return self.put(name, record)

    async def update(self, name: str, record: LeaseRecord, resource_version: str | None) -> str:
        await self._maybe_slow(name)
        await asyncio.sleep(self.late.get(name, 0.0))
        if name not in self.stored or self.stored[name][1] != resource_version:
            raise LeaseConflict("changed")
        return self.put(name, record)

    async def close(self) -> None:
        pass


def name(shard: int) -> str:
    return lease_name(SETTINGS.lease_name_prefix, shard, SETTINGS.shards)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def given_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    """This test's managers' Leases given up for want of a renewal (their Leases are in the
    namespace ``ns``; a manager of another test in this process may still log its own)."""
    lines = [r.getMessage() for r in caplog.records]
    return [m for m in lines if "(Lease ns/" in m and "given up: not renewed" in m]


async def stop(manager: LeaseManager, loop: asyncio.Task[None]) -> None:
    """As the operator stops: the loops cancelled, then every Lease released (which also ends
    the holds' deadline timers, that would otherwise fire during the next test)."""
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    await manager.release()


async def test_a_lease_that_cannot_be_written_costs_this_replica_no_other_it_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Shard 1's Lease takes longer than a third of a renewal period per call and then fails;
    # shard 0's answers at once. Renewing shard 0 must not wait behind shard 1's attempts.
    leases = MemoryLeases(slow={name(1): 0.4})
    acquired: list[int] = []
    manager = LeaseManager(leases, SETTINGS, "a", on_acquired=acquired.append)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="ferry.reconcile.leases")
    loop = asyncio.create_task(manager.run())
    try:
        await until(lambda: manager.holds(0))
        held_throughout = True
        for _ in range(300):  # 3 s: two lease durations
            held_throughout &= manager.holds(0)
            await asyncio.sleep(0.01)
    finally:
        await stop(manager, loop)
    assert held_throughout
    assert acquired == [0]
    assert not given_up(caplog)


async def test_a_slow_renewal_does_not_make_another_renewal_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both shards held; then each renewal succeeds, slowly: shard 1's in 0.4 s, shard 0's in
    # 0.15 s, each within the 0.5 s a call may take. One after the other they would overrun the
    # 0.5 s a renewal has (lease duration - 2 renewal periods) and a shard would be given up.
    leases = MemoryLeases()
    manager = LeaseManager(leases, SETTINGS, "a", on_acquired=lambda _: None)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="ferry.reconcile.leases")
    loop = asyncio.create_task(manager.run())
    try:
        await until(lambda: manager.holds(0) and manager.holds(1))
        leases.late = {name(1): 0.4, name(0): 0.15}
        held_throughout = True
        for _ in range(300):  # 3 s: two lease durations
            held_throughout &= manager.holds(0) and manager.holds(1)
            await asyncio.sleep(0.01)
    finally:
        await stop(manager, loop)
    assert held_throughout
    assert not given_up(caplog)


async def test_a_clean_stop_releases_every_lease_naming_this_replica() -> None:
    # Shard 0 names this replica though it never noted holding it (stopped between the write
    # and noting it); shard 1 is another replica's and stays so.
    leases = MemoryLeases()
    leases.put(name(0), claim(None, "a", 2, "2026-11-29T00:00:00.000000Z"))
    leases.put(name(1), claim(None, "b", 2, "2026-11-29T00:00:00.000000Z"))
    manager = LeaseManager(leases, SETTINGS, "a", on_acquired=lambda _: None)  # type: ignore[arg-type]
    await manager.release()
    assert leases.stored[name(0)][0].holder == ""
    assert leases.stored[name(1)][0].holder == "b"


async def test_a_shard_is_handed_over_only_once_its_cancelled_reconciles_have_ended() -> None:
    leases = MemoryLeases()
    manager = LeaseManager(leases, SETTINGS, "a", on_acquired=lambda _: None)  # type: ignore[arg-type]
    loop = asyncio.create_task(manager.run())
    ended: list[float] = []

    async def reconcile() -> None:  # still writing for a moment after it is cancelled
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.3)
            ended.append(time.monotonic())

    try:
        await until(lambda: manager.holds(0) and manager.holds(1))
        work = asyncio.create_task(manager.while_held(0, reconcile()))
        await asyncio.sleep(0.05)
        record, _ = leases.stored[name(0)]
        leases.put(name(0), requested(record, "b"))  # replica b asks for shard 0
        await until(lambda: leases.stored[name(0)][0].holder == "b")
        await work  # dropped with the shard: ends without an error
        holds = manager.holds(0), manager.holds(1)
    finally:
        await stop(manager, loop)
    (handed_over,) = [when for when, lease, holder in leases.writes if holder == "b"]
    assert ended and handed_over >= ended[0]
    assert holds == (False, True)
