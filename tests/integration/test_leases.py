"""The Lease protocol on a real API server: replicas (ferry.reconcile.leases.LeaseManager, in this
process) contending for the Leases of a fresh namespace, with short durations.

A monitor samples every replica's ``holds()`` every few milliseconds: at no instant may two of
them hold the same shard. (All replicas share this process's clock, so the samples are exact.)
The same protocol with two `ferry run` processes: tests/integration/test_ha.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx2 as httpx
import pytest
from lightkube import AsyncClient, KubeConfig

from ferry.adapters.leases import Leases
from ferry.devenv.process import free_port
from ferry.domain.shards import lease_name
from ferry.reconcile.leases import LeaseManager
from ferry.settings import LeaderSettings
from tests.support import Kube

pytestmark = pytest.mark.integration


@dataclass
class Replica:
    identity: str
    manager: LeaseManager
    task: asyncio.Task[None]
    acquired: list[int] = field(default_factory=list)

    def crash(self) -> None:
        """Stop renewing without releasing: a hung or partitioned process (its deadline timers
        still run, as they would in a process whose API calls hang)."""
        self.task.cancel()

    async def stop(self) -> None:
        """A clean stop: the Leases are released."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.manager.release()


class Cluster:
    """Replicas of one test, the Leases' namespace, and the overlap monitor."""

    def __init__(self, kube: Kube, namespace: str, shards: int, duration: float) -> None:
        self.kube = kube
        self.namespace = namespace
        self.prefix = f"t{uuid.uuid4().hex[:6]}"
        self.leader = LeaderSettings(
            lease_namespace=namespace,
            shards=shards,
            lease_name_prefix=self.prefix,
            lease_duration_seconds=duration,
            renew_seconds=duration / 3,
            retry_seconds=min(0.5, duration / 3),
        )
        self.replicas: list[Replica] = []
        self.overlaps: list[tuple[int, list[str]]] = []
        self.dead: list[Replica] = []

    def start(self, identity: str) -> Replica:
        leases = Leases.connect(str(self.kube.kubeconfig), self.namespace, 5.0)
        acquired: list[int] = []
        manager = LeaseManager(leases, self.leader, identity, on_acquired=acquired.append)
        replica = Replica(identity, manager, asyncio.create_task(manager.run()), acquired)
        self.replicas.append(replica)
        return replica

    async def monitor(self) -> None:
        while True:
            for shard in range(self.leader.shards):
                holders = [r.identity for r in self.replicas if r.manager.holds(shard)]
                if len(holders) > 1:
                    self.overlaps.append((shard, holders))
            await asyncio.sleep(0.005)

    def kill(self, replica: Replica) -> None:
        """The process is gone (SIGKILL, OOM): nothing of it runs or holds anything any more."""
        replica.crash()
        self.replicas.remove(replica)
        self.dead.append(replica)

    def lease(self, shard: int) -> dict[str, object]:
        name = lease_name(self.prefix, shard, self.leader.shards)
        return self.kube.get_json("lease", name, "-n", self.namespace)


@asynccontextmanager
async def cluster(kube: Kube, shards: int = 1, duration: float = 3.0) -> AsyncIterator[Cluster]:
    namespace = await asyncio.to_thread(kube.namespace, "leases")
    found = Cluster(kube, namespace, shards, duration)
    monitor = asyncio.create_task(found.monitor())
    try:
        yield found
    finally:
        monitor.cancel()
        for replica in found.replicas + found.dead:  # a dead one's client closes here, late
            replica.task.cancel()
            await asyncio.gather(replica.task, return_exceptions=True)
            # Released, which also ends its holds' deadline timers: a crashed replica's would
            # otherwise fire during a later test of this process (and log "given up" there).
            with contextlib.suppress(Exception):
                await replica.manager.release()  # closes its client too
        await asyncio.to_thread(
            kube.kubectl, "delete", "namespace", namespace, "--wait=false", check=False
        )
    assert found.overlaps == [], f"two replicas held a shard at once: {found.overlaps[:5]}"


def nowhere() -> KubeConfig:
    """A kubeconfig for an API server that is not there (a port nothing listens on)."""
    return KubeConfig.from_dict(
        {
            "clusters": [
                {"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}
            ],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "gone", "user": "u"}}],
            "current-context": "c",
        }
    )


async def until(probe: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait (bounded) until ``probe()``; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def test_one_replica_leads_and_another_takes_over_only_after_the_first_stopped(
    kube: Kube,
) -> None:
    async with cluster(kube, duration=3.0) as c:
        a = c.start("replica-a")
        await until(lambda: a.manager.holds(0), 20, "replica-a to lead")
        b = c.start("replica-b")
        await asyncio.sleep(4.0)  # longer than a lease duration: b must stay on standby
        assert not b.manager.holds(0) and a.manager.holds(0)

        stopped_at: list[float] = []

        async def reconcile_forever() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                stopped_at.append(time.monotonic())

        in_flight = asyncio.create_task(a.manager.while_held(0, reconcile_forever()))
        await asyncio.sleep(0.1)
        a.crash()
        took_over = await until(lambda: b.manager.holds(0), 30, "replica-b to take over")
        # The reconcile in flight on a was cancelled, before b held the shard, and the worker
        # running it was not: it simply returned (the key is dropped, not failed).
        assert in_flight.done() and not in_flight.cancelled() and in_flight.exception() is None
        assert stopped_at and stopped_at[0] < took_over
        assert b.acquired == [0]
        lease = await asyncio.to_thread(c.lease, 0)
        assert lease["spec"]["holderIdentity"] == "replica-b"
        assert lease["spec"]["leaseTransitions"] == 1
        assert lease["spec"]["leaseDurationSeconds"] == 3


async def test_a_holder_cut_off_from_the_api_server_stops_before_another_takes_over(
    kube: Kube, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(kube, duration=3.0) as c:
        a = c.start("replica-a")
        await until(lambda: a.manager.holds(0), 20, "replica-a to lead")
        b = c.start("replica-b")
        await asyncio.sleep(1.0)
        # From now on every request of a's goes to a port nothing listens on: a partition.
        healthy = a.manager.leases.client
        a.manager.leases.client = AsyncClient(nowhere(), timeout=httpx.Timeout(1.0))
        cut = time.monotonic()
        try:
            with caplog.at_level(logging.WARNING, logger="ferry.reconcile.leases"):
                await until(lambda: not a.manager.holds(0), 10, "replica-a to give up")
                await until(lambda: b.manager.holds(0), 30, "replica-b to take over")
                waited = time.monotonic() - cut
        finally:
            await a.manager.leases.client.close()
            a.manager.leases.client = healthy
        failures = [r for r in caplog.records if "renewal failed" in r.getMessage()]
        # Retried every retry_seconds (0.5 s here) until the deadline, not in a tight loop.
        assert 1 <= len(failures) <= waited / c.leader.retry_seconds + 2, len(failures)
        assert any("not renewed within 2s" in r.getMessage() for r in caplog.records)


async def test_a_clean_stop_releases_the_lease_so_the_standby_need_not_wait_it_out(
    kube: Kube,
) -> None:
    async with cluster(kube, duration=30.0) as c:
        a = c.start("replica-a")
        await until(lambda: a.manager.holds(0), 20, "replica-a to lead")
        b = c.start("replica-b")
        await asyncio.sleep(1.0)
        released_at = time.monotonic()
        await a.stop()
        assert not a.manager.holds(0)
        took_over = await until(lambda: b.manager.holds(0), 30, "replica-b to take over")
        # Far sooner than the 30 s an unreleased Lease would keep it waiting.
        assert took_over - released_at < 15, took_over - released_at


async def test_a_restarted_replica_takes_its_own_lease_back_at_once(kube: Kube) -> None:
    async with cluster(kube, duration=30.0) as c:
        first = c.start("ferry-0_1")
        await until(lambda: first.manager.holds(0), 20, "the first life to lead")
        c.kill(first)  # e.g. the container is OOM-killed; the pod (and so the identity) stays
        await asyncio.sleep(0.5)
        restarted_at = time.monotonic()
        second = c.start("ferry-0_1")
        took_over = await until(lambda: second.manager.holds(0), 30, "the second life to lead")
        assert took_over - restarted_at < 15, took_over - restarted_at
        assert (await asyncio.to_thread(c.lease, 0))["spec"].get("leaseTransitions", 0) == 0


async def test_shards_spread_over_replicas_a_late_replica_is_handed_one(kube: Kube) -> None:
    async with cluster(kube, shards=2, duration=3.0) as c:
        a = c.start("replica-a")
        await until(lambda: a.manager.holds(0) and a.manager.holds(1), 30, "a to hold both")
        b = c.start("replica-b")

        def spread() -> bool:
            return all(a.manager.holds(s) != b.manager.holds(s) for s in (0, 1)) and any(
                b.manager.holds(s) for s in (0, 1)
            )

        await until(spread, 30, "one shard each")
        await asyncio.sleep(4.0)  # and it stays that way (no flapping)
        assert spread()
        assert b.acquired == [1] and sorted(a.acquired) == [0, 1]  # no shard moved back and forth
        given = next(s for s in (0, 1) if b.manager.holds(s))
        assert given == 1  # the highest shard moves; shard 0 (flags, chores) stays put
        lease = await asyncio.to_thread(c.lease, given)
        assert lease["spec"]["holderIdentity"] == "replica-b"
        assert "ferry.dev/handover-to" not in (lease["metadata"].get("annotations") or {})

        # One replica gone: the other takes its shard over.
        b.crash()
        await until(lambda: a.manager.holds(0) and a.manager.holds(1), 30, "a to hold both again")
