"""Throughput with one shard and with two, side by side in the same run (issue 15: past one
process).

    .venv/bin/python bench/shards.py [--entries 1000] [--namespaces 4] [--rounds 2]

Starts its own kube-apiserver + etcd, PostgreSQL and Redis. Each phase runs two `ferry run`
replicas with Leases (``leader.*``), as a Deployment with ``replicas: 2`` would, and fresh
namespaces (half of them in each shard of two):

- **one shard**: plain leader election, one replica active and the other on standby;
- **two shards**: one shard per replica;
- and, as a control, **one shard with 16 workers** (``reconcile.workers``, default 8): as many
  reconciles in flight as two shards have, in one process, which tells how much of a gain comes
  from a second process rather than from more concurrency.

Once the Leases are settled, ``--entries`` new ConfigEntries are created from 8 client threads,
spread evenly over the namespaces, and the phase lasts until every one is Ready. Printed per
phase: wall time and entries/s, the CPU seconds each replica used, and the creates alone (the
floor: how fast this API server takes the writes, measured in the same phase, while the replicas
already reconcile the first ones: a floor under load, not an idle server's). Phases alternate
for ``--rounds`` rounds so both meet the machine in the same state. No admission webhooks are
registered: this measures reconciling (admission serves on every replica either way and is
measured by bench/admission_latency.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from floors import each_at_once
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Namespace
from reconcile_bench import cpu_seconds, peak_rss_kib, wait_all_ready

from ferry.devenv.process import Process, free_port
from ferry.devenv.stack import Stack, run_operator, start_stack
from ferry.domain.shards import lease_name, shard_of
from ferry.tls import CertificateAuthority

ConfigEntry = create_namespaced_resource("ferry.dev", "v1alpha1", "ConfigEntry", "configentries")
LEASE_NAMESPACE = "ferry-system"
PARALLEL_CREATES = 8


@dataclass
class Phase:
    label: str
    seconds: float
    creates: float
    cpu: dict[str, float]
    rss: dict[str, float]  # peak (VmHWM), MiB
    held: dict[str, list[int]]  # shards each replica held


def start_replicas(stack: Stack, shards: int, workers: int, prefix: str) -> dict[str, Process]:
    """Two replicas started together (like a Deployment's pods), each with the same mounted
    serving certificate, so neither registers webhook configurations."""
    ca = CertificateAuthority.create("bench-shards-ca")
    found: dict[str, Process] = {}
    errors: list[BaseException] = []

    def start(identity: str) -> None:
        directory = stack.directory / prefix / identity
        (directory / "webhook").mkdir(parents=True)
        ca.issue("127.0.0.1", hosts=("127.0.0.1",)).write(
            directory / "webhook" / "tls.crt", directory / "webhook" / "tls.key"
        )
        (directory / "webhook" / "ca.crt").write_bytes(ca.cert_pem)
        env = {
            **os.environ,
            **stack.env(),
            "FERRY_LEADER_LEASE_NAMESPACE": LEASE_NAMESPACE,
            "FERRY_LEADER_SHARDS": str(shards),
            "FERRY_LEADER_LEASE_NAME_PREFIX": prefix,
            "FERRY_LEADER_IDENTITY": identity,
            "FERRY_WORKERS": str(workers),
        }
        env.pop("FERRY_WEBHOOK_CLIENT_CA_FILE", None)
        try:
            found[identity] = run_operator(
                env,
                directory / "webhook",
                directory / "operator.log",
                api_port=free_port(),
                webhook_port=free_port(),
                timeout=120,
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in ("replica-a", "replica-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for process in found.values():
            process.stop()
        raise errors[0]
    return found


def wait_leases(client: Client, prefix: str, shards: int, timeout: float = 90) -> dict[int, str]:
    """Until every shard is held, by as many different replicas as there are shards (two at
    most): the layout the phase is meant to measure."""
    deadline = time.monotonic() + timeout
    while True:
        holders: dict[int, str] = {}
        for shard in range(shards):
            try:
                lease = client.get(
                    Lease, lease_name(prefix, shard, shards), namespace=LEASE_NAMESPACE
                )
            except Exception:
                continue
            if lease.spec is not None and lease.spec.holderIdentity:
                holders[shard] = lease.spec.holderIdentity
        if len(holders) == shards and len(set(holders.values())) == min(shards, 2):
            return holders
        if time.monotonic() > deadline:
            raise TimeoutError(f"Leases not settled after {timeout}s: {holders}")
        time.sleep(0.5)


def make_namespaces(client: Client, count: int) -> list[str]:
    """``count`` fresh namespaces, half in each shard of two (the same layout for every phase)."""
    found: dict[int, list[str]] = {0: [], 1: []}
    while sum(len(v) for v in found.values()) < count:
        name = f"bench-shards-{uuid.uuid4().hex[:6]}"
        shard = shard_of(name, 2)
        if len(found[shard]) < (count + 1 - shard) // 2:
            client.create(Namespace(metadata=ObjectMeta(name=name)))
            found[shard].append(name)
    return found[0] + found[1]


def entry_keys(namespaces: list[str], entries: int) -> list[tuple[str, str]]:
    """(namespace, name) of each entry a phase creates, spread evenly over ``namespaces``."""
    return [(namespaces[i % len(namespaces)], f"e-{i:05d}") for i in range(entries)]


def create_entries(kubeconfig: Path, namespaces: list[str], entries: int) -> float:
    """Create the entries, several at a time; how long the creates took (the floor)."""
    work = entry_keys(namespaces, entries)

    async def create(api: AsyncClient, item: tuple[str, str]) -> None:
        ns, name = item
        await api.create(
            ConfigEntry(metadata=ObjectMeta(name=name, namespace=ns), spec={"data": {"n": name}})
        )

    client = Client(KubeConfig.from_file(str(kubeconfig)), field_manager="bench")
    start = time.perf_counter()
    each_at_once(client, work, create, PARALLEL_CREATES)
    return time.perf_counter() - start


def phase(directory: Path, shards: int, workers: int, entries: int, namespaces: int) -> Phase:
    """One layout on a fresh stack of its own, so that no phase inherits another's objects (a
    replica taking a shard reconciles every existing key of it) or its warmed-up servers."""
    stack = start_stack(directory)
    try:
        client = Client(KubeConfig.from_file(str(stack.kubeconfig)), field_manager="bench")
        # The namespace may exist already (the local stack's history API is registered there).
        client.apply(Namespace(metadata=ObjectMeta(name=LEASE_NAMESPACE)), field_manager="bench")
        prefix = f"b{uuid.uuid4().hex[:6]}"
        replicas = start_replicas(stack, shards, workers, prefix)
        try:
            holders = wait_leases(client, prefix, shards)
            names = make_namespaces(client, namespaces)
            before = {i: cpu_seconds(p.pid) for i, p in replicas.items()}
            start = time.perf_counter()
            done = threading.Event()
            created: list[float] = []

            def creator() -> None:
                try:
                    created.append(create_entries(stack.kubeconfig, names, entries))
                finally:
                    done.set()

            ready_at: list[float] = []
            waited: list[BaseException] = []

            def waiter() -> None:  # a watch: listing every entry over and over costs the CPUs
                try:
                    keys = set(entry_keys(names, entries))
                    wait_all_ready(stack.kubeconfig, keys, timeout=1800)
                    ready_at.append(time.perf_counter())
                except BaseException as error:  # raised below, in the phase's thread
                    waited.append(error)

            watching = threading.Thread(target=waiter, daemon=True)
            watching.start()
            threading.Thread(target=creator, daemon=True).start()
            while watching.is_alive():  # the watch has its own 1,800 s timeout
                if done.is_set() and not created:
                    raise RuntimeError("creating the entries failed (the error is above)")
                watching.join(0.2)
            if waited:
                raise waited[0]
            seconds = ready_at[0] - start
            cpu = {i: cpu_seconds(p.pid) - before[i] for i, p in replicas.items()}
            rss = {i: peak_rss_kib(p.pid) / 1024 for i, p in replicas.items()}
        finally:
            for process in replicas.values():
                process.stop()
    finally:
        stack.stop()
    label = {
        (1, 8): "one shard (1 active + 1 standby)",
        (2, 8): "two shards (1 + 1 active)",
        (1, 16): "control: one shard, 16 workers",
    }[(shards, workers)]
    held = {i: sorted(s for s, h in holders.items() if h == i) for i in replicas}
    return Phase(label, seconds, created[0], cpu, rss, held)


def role(held: list[int]) -> str:
    return "shard " + ",".join(map(str, held)) if held else "standby"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{args.entries} new entries in {args.namespaces} namespaces → all Ready; two replicas; "
        f"{os.cpu_count()} CPUs shared with the API server, etcd, PostgreSQL, Redis and this "
        "client; a fresh stack per phase"
    )
    layouts = [(1, 8), (2, 8), (1, 16)]
    results: dict[tuple[int, int], list[Phase]] = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory(prefix="ferry-bench-shards-") as tmp:
        for round_ in range(1, args.rounds + 1):
            for shards, workers in layouts:
                directory = Path(tmp) / f"r{round_}-{shards}-{workers}"
                found = phase(directory, shards, workers, args.entries, args.namespaces)
                results[(shards, workers)].append(found)
                each = ", ".join(
                    f"{i[-1]} {found.cpu[i]:.1f} s / {found.rss[i]:.0f} MiB ({role(found.held[i])})"
                    for i in sorted(found.cpu)
                )
                print(
                    f"  round {round_}  {found.label:<34} {found.seconds:6.1f} s"
                    f"  ({args.entries / found.seconds:5.1f} entries/s)"
                    f"  [floor: the creates alone, meanwhile {found.creates:.1f} s]"
                    f"  replicas' CPU / peak RSS: {each}",
                    flush=True,
                )
    best = {k: min(p.seconds for p in phases) for k, phases in results.items()}
    floor = min(p.creates for phases in results.values() for p in phases)
    print(
        f"  best of {args.rounds}: one shard {args.entries / best[(1, 8)]:.1f} entries/s, "
        f"two shards {args.entries / best[(2, 8)]:.1f} entries/s "
        f"({best[(1, 8)] / best[(2, 8)]:.2f}x); control, one shard with 16 workers "
        f"{args.entries / best[(1, 16)]:.1f} entries/s [floor: the creates alone, fastest "
        f"{args.entries / floor:.1f} entries/s]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
