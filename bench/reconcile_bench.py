"""Reconciliation benchmarks (issue: reconciliation). Prints figures next to their floors.

    .venv/bin/python bench/reconcile_bench.py [--applies 200] [--pause 0.1] [--fanout 1000]
        [--join 200] [--scale 5000] [--no-restart]

Starts its own control plane, PostgreSQL, Redis and operator (webhooks on), like `ferry dev up`.
- latency: server-side apply of a new ConfigEntry → its ConfigMap seen by a watch, p50/p99, next
  to the floor: a plain ConfigMap create against the same API server, in the same run. First as
  isolated changes, ``--pause`` apart (a user's change arriving at an idle operator), in rounds
  where five variants take turns, each in a namespace of its own: the floor; a no-op controller
  (`noop_controller.py`: watch → server-side apply, nothing else), without and with no-op
  admission webhooks (`noop_webhook.py`, registered like Ferry's): the floors for any controller
  of this shape on this machine; Ferry with its webhooks kept out of its namespace; Ferry as a
  user meets it, webhooks on. The no-op controller serves ConfigEntry's twin (the same CRD in an
  API group of its own, ``floors.install_twin``), so it runs beside Ferry and every variant meets
  the machine in the same states; Ferry's p99 against the no-op controller's behind no-op
  webhooks is given with a 95% interval resampled round by round. Then Ferry back to back (each
  apply arriving while the operator still finishes the previous one): a stream that keeps the
  machine's CPUs busy, so it measures throughput as much as latency.
- fan-out: one entry into N accepting namespaces → all N ConfigMaps seen by a watch (and when
  Ready came); one namespace label that brings ``--join`` entries' targets → all written.
- scale: N entries created while the operator is stopped → operator started → all Ready; the
  operator's peak RSS (VmHWM).
- restart: the operator stopped and started again over those N unchanged entries → ready, and
  every entry reconciled (its ``ferry_reconcile_duration_seconds_count``); the writes it made,
  counted by the API server itself (``apiserver_request_total`` by verb and resource, before and
  after; Leases excluded, they are how a replica holds its shards), and the new revisions in
  PostgreSQL. Goal: zero of both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
from floors import (
    NOOP_CONFIGURATION_NAME,
    TWIN_GROUP,
    TwinEntry,
    add_layout_option,
    each_at_once,
    install_twin,
    register,
    saved_configurations,
    scope,
    start_ferry_as,
    start_noop_controller,
    start_noop_webhook,
)
from intervals import interval, verdict
from lightkube import ALL_NS, AsyncClient, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace
from lightkube.types import PatchType
from prometheus_client.parser import text_string_to_metric_families

from ferry.adapters import kube_client
from ferry.devenv.process import Process, log_tail
from ferry.devenv.stack import Stack, start_operator, start_stack
from ferry.domain.labels import FINALIZER
from ferry.settings import ReconcileSettings

#: Issue 15: apply → ConfigMap p99 at most this many times the no-op controller's behind no-op
#: webhooks (isolated changes).
GOAL_RATIO = 1.2
#: Labels each latency variant's namespace with its name (the webhooks' namespaceSelectors).
LATENCY_LABEL = "bench-latency"

ConfigEntry = create_namespaced_resource("ferry.dev", "v1alpha1", "ConfigEntry", "configentries")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def namespace(client: Client, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.create(Namespace(metadata=ObjectMeta(name=name, labels=labels or {})))
    return name


def entry(name: str, ns: str, spec: dict[str, Any]) -> Any:
    return ConfigEntry(metadata=ObjectMeta(name=name, namespace=ns), spec=spec)


def watch_client(kubeconfig: Path) -> Client:
    """A sync client for one watching thread: threads sharing lightkube's sync client crashed
    the interpreter here (``floors.each_at_once``), so a watcher never uses the main thread's."""
    return Client(KubeConfig.from_file(str(kubeconfig)), field_manager="bench")


class Seen:
    """Watch ConfigMaps in every namespace and note when each (namespace, name) first appears."""

    def __init__(self, kubeconfig: Path) -> None:
        self.times: dict[tuple[str, str], float] = {}
        self._changed = threading.Condition()
        client = watch_client(kubeconfig)
        self._thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self._thread.start()
        time.sleep(0.5)

    def _run(self, client: Client) -> None:
        try:
            for _, cm in client.watch(ConfigMap, namespace=ALL_NS):
                assert cm.metadata is not None
                seen = time.perf_counter()
                key = (str(cm.metadata.namespace), str(cm.metadata.name))
                with self._changed:
                    self.times.setdefault(key, seen)
                    self._changed.notify_all()
        except httpx.TransportError:
            pass  # the API server stopped at the end of the run

    def wait(self, ns: str, name: str, timeout: float = 30) -> float:
        with self._changed:
            if not self._changed.wait_for(lambda: (ns, name) in self.times, timeout=timeout):
                raise TimeoutError(f"ConfigMap {ns}/{name} not seen within {timeout}s")
            return self.times[ns, name]


def percentiles(values: list[float]) -> str:
    return f"p50 {ms(percentile(values, 50))}  p99 {ms(percentile(values, 99))}"


@dataclass
class Latency:
    """Apply → ConfigMap times of one variant: whole, and the apply request's share of each."""

    total: list[float] = field(default_factory=list)
    admitted: list[float] = field(default_factory=list)

    def line(self, label: str, floor_p99: float) -> str:
        ratio = percentile(self.total, 99) / floor_p99
        after = [t - a for t, a in zip(self.total, self.admitted, strict=True)]
        return (
            f"  {label:<44} {percentiles(self.total)}  (p99 = {ratio:.1f}x floor p99)\n"
            f"      of which the apply request {percentiles(self.admitted)};"
            f" apply returned → ConfigMap seen {percentiles(after)}"
        )


@dataclass
class Variant:
    """One way a change reaches a ConfigMap, in a namespace of its own."""

    label: str
    ns: str
    kind: Any  # what is applied: ConfigEntry, its twin (the no-op controller's), or None
    latency: Latency = field(default_factory=Latency)

    def apply(self, client: Client, seen: Seen, name: str, data: dict[str, Any]) -> None:
        start = time.perf_counter()
        if self.kind is None:  # the floor: the ConfigMap itself, created
            configmap = ConfigMap(
                metadata=ObjectMeta(name=name, namespace=self.ns),
                data={"config.json": json.dumps(data)},
            )
            client.create(configmap)
            done = admitted = time.perf_counter()
        else:
            obj = self.kind(metadata=ObjectMeta(name=name, namespace=self.ns), spec={"data": data})
            client.apply(obj, field_manager="bench")
            admitted = time.perf_counter()
            done = seen.wait(self.ns, name)
        self.latency.total.append(done - start)
        self.latency.admitted.append(admitted - start)


def take_turns(
    client: Client, seen: Seen, variants: list[Variant], applies: int, pause: float
) -> None:
    """``applies`` rounds, each one new object per variant (in rotating order), ``pause``
    seconds apart: every variant meets the machine in the same states, its background work
    (Ferry's resync, PostgreSQL's checkpoints, the API server's compactions) included."""
    for i in range(applies):
        turn = i % len(variants)
        for variant in variants[turn:] + variants[:turn]:
            variant.apply(client, seen, f"e-{i}", {"i": i})
            time.sleep(pause)


def labelled(client: Client, variant: str) -> str:
    return namespace(client, f"bench-lat-{variant}", {LATENCY_LABEL: variant})


def bench_latency(client: Client, stack: Stack, applies: int, pause: float, layout: str) -> None:
    """Isolated changes (``pause`` apart, every controller idle when each arrives), taking turns
    between the floors and Ferry; then Ferry's back to back (each apply arriving while the
    operator still finishes the previous one)."""
    seen = Seen(stack.kubeconfig)
    install_twin(stack)
    controller = start_noop_controller(stack)
    noop_webhook, noop_hooks = start_noop_webhook(stack)
    try:
        start_ferry_as(stack, layout)
        ferry_ns = isolated_applies(client, stack, seen, controller, noop_hooks, applies, pause)
    finally:
        controller.stop()
        noop_webhook.stop()

    stream_floor = Variant("floor: plain ConfigMap create", labelled(client, "stream"), None)
    stream = Variant("ferry, webhooks on", ferry_ns, ConfigEntry)
    for variant in (stream_floor, stream):
        for i in range(applies):
            variant.apply(client, seen, f"stream-{i}", {"i": i})
    print(f"latency, {applies} applies back to back")
    print(f"  {stream_floor.label:<44} {percentiles(stream_floor.latency.total)}")
    print(stream.latency.line(stream.label, percentile(stream_floor.latency.total, 99)))


def isolated_applies(
    client: Client,
    stack: Stack,
    seen: Seen,
    controller: Process,
    noop_hooks: list[dict[str, Any]],
    applies: int,
    pause: float,
) -> str:
    """The floors and Ferry taking turns (:func:`take_turns`), each variant in a namespace of its
    own: Ferry's webhooks kept out of one, the no-op webhooks (registered for the twin kind the
    no-op controller serves) let into one. Prints them; returns Ferry's namespace."""
    floor, noop, noop_hooked, unchecked, ferry = variants = [
        Variant("floor: plain ConfigMap create", labelled(client, "floor"), None),
        Variant("floor: no-op controller", labelled(client, "noop"), TwinEntry),
        Variant(
            "floor: no-op controller + no-op webhooks", labelled(client, "noop-hooked"), TwinEntry
        ),
        Variant("ferry, webhooks off", labelled(client, "ferry-off"), ConfigEntry),
        Variant("ferry, webhooks on (what a user sees)", labelled(client, "ferry"), ConfigEntry),
    ]

    def where(operator: str, variant: str) -> dict[str, Any]:
        match = {"key": LATENCY_LABEL, "operator": operator, "values": [variant]}
        return {"matchExpressions": [match]}

    ferry_hooks = saved_configurations(stack)
    register(
        stack,
        scope(ferry_hooks, where("NotIn", "ferry-off"))
        + scope(noop_hooks, where("In", "noop-hooked"), NOOP_CONFIGURATION_NAME, TWIN_GROUP),
    )
    for variant in variants:  # each path warm (connections, caches) before anything is timed
        try:
            variant.apply(client, seen, "warmup", {})
        except TimeoutError:
            if variant.kind is not TwinEntry:
                raise
            raise RuntimeError(
                f"no-op controller silent; log:\n{log_tail(controller.log)}"
            ) from None
        variant.latency = Latency()
    take_turns(client, seen, variants, applies, pause)
    register(stack, ferry_hooks)

    floor_p99 = percentile(floor.latency.total, 99)
    print(f"latency, {applies} rounds of isolated applies {pause * 1000:.0f} ms apart, the")
    print("variants taking turns (apply → ConfigMap present)")
    print(f"  {floor.label:<44} {percentiles(floor.latency.total)}")
    for variant in (noop, noop_hooked, unchecked, ferry):
        print(variant.latency.line(variant.label, floor_p99))

    def ratio(ferry: list[float], floor: list[float]) -> float:
        return percentile(ferry, 99) / percentile(floor, 99)

    # Resampled round by round: each round's applies met the machine moments apart.
    low, high = interval(ratio, ferry.latency.total, noop_hooked.latency.total, paired=True)
    print(
        f"  Ferry (webhooks on) p99 = {ratio(ferry.latency.total, noop_hooked.latency.total):.2f}x"
        f" the no-op controller behind no-op webhooks, 95% interval {low:.2f}x … {high:.2f}x;"
        f" goal <= {GOAL_RATIO}x: {verdict(low, high, GOAL_RATIO)}"
    )
    return ferry.ns


def is_ready(obj: Any) -> bool:
    """Ready=True for the generation the object has now (what ``kubectl wait`` checks)."""
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj.metadata.generation and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )


def wait_ready(kubeconfig: Path, ns: str, names: set[str], timeout: float) -> float:
    """Seconds until every one of ``names`` in ``ns`` is Ready, seen through one watch."""
    return wait_all_ready(kubeconfig, {(ns, name) for name in names}, timeout, namespace=ns)


def wait_all_ready(
    kubeconfig: Path, keys: set[tuple[str, str]], timeout: float, namespace: str = ALL_NS
) -> float:
    """Seconds until every entry of ``keys`` (namespace, name) is Ready, seen through one watch
    of ``namespace`` (default: all of them).

    A watch, not a poll: listing thousands of entries every few hundred milliseconds costs the
    API server (and this process) a share of the same two CPUs the operator is measured on. A
    watch opened without a resourceVersion starts with the present state of every object.
    """

    async def watch() -> float:
        start = time.perf_counter()
        api = kube_client.make_client(str(kubeconfig), timeout_seconds=15.0)
        ready: set[tuple[str, str]] = set()
        try:
            async with asyncio.timeout(timeout):
                async for _, obj in api.watch(ConfigEntry, namespace=namespace):
                    key = (str(obj.metadata.namespace), str(obj.metadata.name))
                    (ready.add if is_ready(obj) else ready.discard)(key)
                    if keys <= ready:
                        return time.perf_counter() - start
        except TimeoutError:
            raise TimeoutError(f"{len(keys - ready)} entries not Ready after {timeout}s") from None
        finally:
            await api.close()
        raise RuntimeError("the watch ended")  # lightkube's watch reconnects; never reached

    return asyncio.run(watch())


class Placed:
    """Watch Ferry's ConfigMaps in every namespace; note when each (namespace, name) appears."""

    def __init__(self, kubeconfig: Path) -> None:
        self.times: dict[tuple[str, str], float] = {}
        self._changed = threading.Condition()
        client = watch_client(kubeconfig)
        threading.Thread(target=self._run, args=(client,), daemon=True).start()
        time.sleep(0.5)

    def _run(self, client: Client) -> None:
        try:
            selector = {"app.kubernetes.io/managed-by": "ferry"}
            for _, cm in client.watch(ConfigMap, namespace="*", labels=selector):
                assert cm.metadata is not None
                seen = time.perf_counter()
                with self._changed:
                    key = (str(cm.metadata.namespace), str(cm.metadata.name))
                    self.times.setdefault(key, seen)
                    self._changed.notify_all()
        except httpx.TransportError:
            pass  # the API server stopped at the end of the run

    def wait_all(self, keys: set[tuple[str, str]], timeout: float) -> float:
        """When the last of ``keys`` appeared."""
        with self._changed:
            if not self._changed.wait_for(lambda: keys <= self.times.keys(), timeout=timeout):
                missing = len(keys - self.times.keys())
                raise TimeoutError(f"{missing} of {len(keys)} ConfigMaps not seen in {timeout}s")
            return max(self.times[k] for k in keys)


def synced_targets(client: Client, ns: str, name: str) -> int:
    obj = client.get(ConfigEntry, name, namespace=ns)
    return sum(1 for t in obj.get("status", {}).get("targets", []) if t.get("synced"))


FLOOR_PARALLEL = 16  # as the operator's reconcile.parallel_applies default


def floor_fanout(client: Client, namespaces: list[str]) -> float:
    """Seconds to create (then delete) one small ConfigMap in each namespace, as many at a
    time as the operator writes targets of one entry."""

    async def create(api: AsyncClient, ns: str) -> None:
        cm = ConfigMap(metadata=ObjectMeta(name="floor", namespace=ns), data={"x": "1"})
        await api.create(cm)

    async def delete(api: AsyncClient, ns: str) -> None:
        await api.delete(ConfigMap, "floor", namespace=ns)

    start = time.perf_counter()
    each_at_once(client, namespaces, create, FLOOR_PARALLEL)
    took = time.perf_counter() - start
    each_at_once(client, namespaces, delete, FLOOR_PARALLEL)
    return took


def bench_fanout(client: Client, kubeconfig: Path, count: int, entries: int) -> None:
    """One entry into ``count`` namespaces; then one namespace label that adds ``entries``
    entries' targets at once. Timed to every ConfigMap seen by a watch, not to Ready."""
    placed = Placed(kubeconfig)
    src = namespace(client, "bench-fan")
    label = f"fan-{uuid.uuid4().hex[:6]}"
    targets = [
        namespace(client, "bench-fan-t", {"fan": label, "ferry.dev/accept": "true"})
        for _ in range(count)
    ]
    floor = floor_fanout(client, targets)
    time.sleep(2)  # the namespaces exist before the change, as in a cluster that has them
    start = time.perf_counter()
    selector = {"namespaceSelector": {"matchLabels": {"fan": label}}}
    client.apply(entry("fan", src, {"data": {"x": 1}, "target": selector}), field_manager="bench")
    last = placed.wait_all({(ns, "fan") for ns in targets}, timeout=300)
    wait_ready(kubeconfig, src, {"fan"}, timeout=300)
    synced = synced_targets(client, src, "fan")
    if synced != count:  # the complaint: Ready reported with targets still unsynced
        raise AssertionError(f"fan-out: Ready with {synced} of {count} targets synced")
    print(
        f"fan-out: one entry into {count} accepting namespaces → all {count} ConfigMaps seen in "
        f"{last - start:.2f} s (goal ≤ 3 s; floor: {count} plain ConfigMap creates, "
        f"{FLOOR_PARALLEL} at a time, {floor:.2f} s); then Ready with {synced} targets synced"
    )
    if not entries:
        return
    group = f"grp-{uuid.uuid4().hex[:6]}"
    names = {f"g-{i:04d}" for i in range(entries)}
    for name in sorted(names):
        spec = {"data": {"n": name}, "target": {"namespaceSelector": {"matchLabels": {"g": group}}}}
        client.create(entry(name, src, spec))
    wait_ready(kubeconfig, src, names, timeout=600)
    joining = namespace(client, "bench-join", {"ferry.dev/accept": "true"})
    time.sleep(2)
    start = time.perf_counter()
    client.patch(Namespace, joining, {"metadata": {"labels": {"g": group}}})
    last = placed.wait_all({(joining, name) for name in names}, timeout=600)
    print(
        f"fan-out: one namespace labelled into the selector of {entries} entries → all "
        f"{entries} ConfigMaps seen in {last - start:.2f} s (goal ≤ 5 s)"
    )


#: The operator's reconcile workers: its default, or FERRY_WORKERS as the operator reads it.
WORKERS = int(os.environ.get("FERRY_WORKERS", ReconcileSettings().workers))
FLOOR_WORKERS = ReconcileSettings().workers  # the floor: as many as the operator by default


async def floor_writes(stack: Stack, ns: str, count: int) -> tuple[float, str]:
    """What a minimal controller must write for each new entry, and nothing else: one row in
    PostgreSQL, one ConfigMap, one status patch. The rows go to a table of their own and the
    ConfigMaps to a namespace of their own (dropped after); the status patches go to the very
    entries (the operator overwrites them when it starts). Returns the seconds the writes took
    and who used the CPU meanwhile (:func:`cpu_split`)."""
    client = kube_client.make_client(  # Ferry's HTTP stack (decision 0028)
        str(stack.kubeconfig), timeout_seconds=15.0, field_manager="bench-floor"
    )
    scratch = f"bench-floor-{uuid.uuid4().hex[:6]}"
    await client.create(Namespace(metadata=ObjectMeta(name=scratch)))
    async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as db:
        await db.execute(
            "CREATE TABLE bench_floor (name text PRIMARY KEY, revision int, content jsonb)"
        )
        pending = list(range(count))
        pool = await asyncio.gather(
            *(psycopg.AsyncConnection.connect(stack.database_url, autocommit=True)
              for _ in range(FLOOR_WORKERS))
        )  # fmt: skip

        async def worker(conn: psycopg.AsyncConnection[Any]) -> None:
            while pending:
                i = pending.pop()
                name = f"s-{i:05d}"
                await conn.execute(
                    "INSERT INTO bench_floor VALUES (%s, 1, %s)", (name, json.dumps({"i": i}))
                )
                data = {"config.json": json.dumps({"i": i, "name": f"s-{i}"})}
                await client.create(
                    ConfigMap(metadata=ObjectMeta(name=name, namespace=scratch), data=data)
                )
                await client.patch(
                    ConfigEntry.Status,
                    name,
                    {"status": {"revision": 1}},
                    namespace=ns,
                    patch_type=PatchType.MERGE,
                )

        cpu_before = cpu_by_process(stack)
        start = time.perf_counter()
        await asyncio.gather(*(worker(conn) for conn in pool))
        took = time.perf_counter() - start
        cpu = cpu_split(cpu_before, cpu_by_process(stack))
        for conn in pool:
            await conn.close()
        await db.execute("DROP TABLE bench_floor")
    await client.deletecollection(ConfigMap, namespace=scratch)
    await client.close()
    return took, cpu


#: The processes of Ferry itself in a stack (``devenv.stack.start_ferry``): the reconciling
#: operator and, in the chart's layout, ``ferry webhooks`` beside it.
FERRY_PROCESSES = ("ferry-operator", "ferry-webhooks")


def stop_ferry(stack: Stack) -> None:
    """Stop every Ferry process the stack runs: nothing reconciles or watches Ferry's kinds."""
    for process in stack.processes:
        if process.name in FERRY_PROCESSES and process.alive():
            process.stop()


def bench_scale(client: Client, count: int, stack: Stack) -> Process:
    """Ferry stopped (whatever ran before: the operator, `ferry webhooks`), ``count`` entries
    created, then one operator started over them (serving its webhooks itself, as in the
    scale-only command). Returns that operator, still running."""
    stop_ferry(stack)
    # Ferry's webhook configurations stay registered while it is stopped (they fail closed), so
    # the entries are created with them taken out, stored as its mutating webhook stores a new
    # entry: with Ferry's finalizer (see ferry.domain.admission.finalizers_on_create). The
    # operator registers the webhooks again at start.
    register(stack, [])
    ns = namespace(client, "bench-scale")
    start = time.perf_counter()
    for i in range(count):
        new = entry(f"s-{i:05d}", ns, {"data": {"i": i, "name": f"s-{i}"}})
        new.metadata.finalizers = [FINALIZER]
        client.create(new)
    created = time.perf_counter() - start
    print(
        f"scale: created {count} entries with the operator stopped in {created:.1f} s "
        f"(floor: {created / count * 1000:.1f} ms per create)"
    )
    floor, floor_cpu = asyncio.run(floor_writes(stack, ns, count))
    print(
        f"scale: floor, the writes each new entry needs (a revision row, a ConfigMap, a status "
        f"patch) for all {count} by a minimal script, {FLOOR_WORKERS} at a time: {floor:.1f} s"
    )
    print(f"scale: CPU during the floor's writes: {floor_cpu}")
    writes_before = api_writes(stack)
    cpu_before = cpu_by_process(stack)
    started = time.perf_counter()
    operator = start_operator(stack, timeout=1200)
    stack.processes.append(operator)  # stopped with the stack, also after a failure
    ready_after = time.perf_counter() - started
    print(f"scale: operator process started → ready (indexes filled) in {ready_after:.1f} s")
    wait_ready(stack.kubeconfig, ns, {f"s-{i:05d}" for i in range(count)}, timeout=1800)
    all_ready = time.perf_counter() - started
    peak_kib = peak_rss_kib(operator.pid)  # VmHWM: the most it has used since it started
    cpu = cpu_seconds(operator.pid)
    cpu_after = cpu_by_process(stack)
    figures = operator_metrics(stack.extra["FERRY_API_URL"])
    full_collections = figures["full_collections"]
    print(
        f"scale: operator process started → all {count} Ready in {all_ready:.1f} s; "
        f"operator peak RSS {peak_kib / 1024:.0f} MiB, CPU {cpu:.1f} s "
        f"({cpu / count * 1000:.2f} ms per entry, start-up included), "
        f"{full_collections:.0f} full garbage collections"
    )
    # The machine's CPUs are what the two phases share; this says who spent them (the floor's
    # line above is the same count for its script).
    print(f"scale: CPU from operator start to all Ready: {cpu_split(cpu_before, cpu_after)}")
    # Where the time went, by the operator's own metrics: with W workers, N reconciles of mean
    # duration d keep them busy for N x d / W; each key also waited in the queue before its turn.
    reconciles, queued = figures["reconciles"], figures["queued"]
    if reconciles and queued:
        mean = figures["reconcile_seconds"] / reconciles
        print(
            f"scale: {reconciles:.0f} entry reconciles of {mean * 1000:.1f} ms on average"
            f" ({reconciles * mean / WORKERS:.1f} s of {WORKERS} workers); a key waited"
            f" {figures['queued_seconds'] / queued:.1f} s on average in the work queue"
        )
    writes = api_writes(stack) - writes_before
    per_entry = ", ".join(
        f"{verb} {resource} {n / count:.2f}"
        for (verb, resource), n in writes.most_common()
        if n >= count / 100 and resource != "leases"
    )
    print(f"scale: API writes per entry (the API server's count, until all Ready): {per_entry}")
    return operator


def proc_stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces):
    [1] is the parent's pid, [11:13] user and system ticks, [13:15] those of reaped children."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def peak_rss_kib(pid: int) -> int:
    """The most resident memory process ``pid`` has used so far (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(stack: Stack) -> Counter[str]:
    """CPU seconds used so far by each of the stack's servers with everything it started
    (PostgreSQL's backends, the operator's validation workers), and by this benchmark's own
    process (the floor's script, the watches). A process counts for the server it descends from;
    children that have exited count once reaped."""
    servers = {p.pid: p.name for p in stack.processes if p.alive()}
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = proc_stat(entry.name)
        except OSError:  # exited meanwhile
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        ticks[pid] = sum(int(f) for f in fields[11:15])  # its own and its reaped children's
    used: Counter[str] = Counter()
    per_second = os.sysconf("SC_CLK_TCK")
    for pid, spent in ticks.items():
        ancestor = pid
        while ancestor > 1 and ancestor not in servers:
            ancestor = parent.get(ancestor, 0)
        if ancestor in servers:
            used[servers[ancestor]] += spent / per_second
    own = os.times()
    used["this benchmark"] = own.user + own.system
    return used


def cpu_split(before: Counter[str], after: Counter[str]) -> str:
    """Who used the CPU between two :func:`cpu_by_process` readings, most first (those that
    used less than 0.05 s left out)."""
    spent = Counter({name: after[name] - before[name] for name in after})
    return ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in spent.most_common() if seconds >= 0.05
    )


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION")


def api_writes(stack: Stack) -> Counter[tuple[str, str]]:
    """Write requests the API server has answered, by (verb, resource), from its own metrics."""
    text = subprocess.run(
        [str(stack.kubectl), "--kubeconfig", str(stack.kubeconfig), "get", "--raw", "/metrics"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    found: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "apiserver_request_total" and labels["verb"] in WRITE_VERBS:
                # A dry run (the webhook registration's probe) writes nothing: named apart.
                verb = f"{labels['verb']} (dry run)" if labels.get("dry_run") else labels["verb"]
                found[(verb, labels.get("resource", ""))] += int(sample.value)
    return found


def revision_count(stack: Stack) -> int:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM revisions").fetchone()
    return int(row[0]) if row else 0


def operator_metrics(api_url: str) -> dict[str, float]:
    """The operator's own figures, from its /metrics: Vault reads sent, ConfigEntry reconciles
    (count and total seconds), the ConfigEntry keys' time in the work queue (count and total
    seconds), Python's full (generation 2) garbage collections, and where the admission
    webhooks' entry checks ran (on their thread or in a worker)."""
    with urllib.request.urlopen(f"{api_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    wanted = {
        ("ferry_vault_reads_total", ""): "vault_reads",
        ("ferry_reconcile_duration_seconds_count", "ConfigEntry"): "reconciles",
        ("ferry_reconcile_duration_seconds_sum", "ConfigEntry"): "reconcile_seconds",
        ("ferry_queue_wait_seconds_count", "ConfigEntry"): "queued",
        ("ferry_queue_wait_seconds_sum", "ConfigEntry"): "queued_seconds",
        ("python_gc_collections_total", "2"): "full_collections",
        ("ferry_entry_checks_total", "admission,inline"): "admission_inline",
        ("ferry_entry_checks_total", "admission,worker"): "admission_worker",
    }
    found = dict.fromkeys(wanted.values(), 0.0)  # a histogram appears with its first sample
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, ",".join(sample.labels.values()))
            if key in wanted:
                found[wanted[key]] = sample.value
    return found


def reconciled(api_url: str) -> float:
    """ConfigEntry reconciles the operator has made since it started."""
    return operator_metrics(api_url)["reconciles"]


def bench_restart(client: Client, count: int, stack: Stack, operator: Process) -> None:
    """Restart over ``count`` unchanged entries: time to ready and to every entry reconciled,
    and the writes and revisions that took (goal: none). Every entry in the cluster is
    reconciled once at start-up, those of earlier phases too: all of them are waited for."""
    operator.stop()
    time.sleep(1)
    present = sum(1 for _ in client.list(ConfigEntry, namespace=ALL_NS))
    writes, revisions = api_writes(stack), revision_count(stack)
    started = time.perf_counter()
    operator = start_operator(stack, timeout=1200)
    stack.processes.append(operator)
    ready_after = time.perf_counter() - started
    api_url = stack.extra["FERRY_API_URL"]
    deadline = time.monotonic() + 1800
    while reconciled(api_url) < present:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {present} entries reconciled after the restart")
        time.sleep(0.1)
    all_done = time.perf_counter() - started
    time.sleep(2)  # anything the last reconciles sent (Events, status) reaches the counters
    made = api_writes(stack) - writes
    new_revisions = revision_count(stack) - revisions
    operator.stop()
    # Floor: what the cluster writes by itself (the API server's own endpoint and lease
    # upkeep) over as long, with no operator running.
    idle = api_writes(stack)
    time.sleep(all_done + 2)
    floor = api_writes(stack) - idle

    def listed(writes: Counter[tuple[str, str]]) -> str:
        return ", ".join(f"{v} {verb} {res}" for (verb, res), v in sorted(writes.items())) or "none"

    # Leases are how a replica holds its shards; dry runs write nothing.
    counted = Counter({k: v for k, v in made.items() if k[1] != "leases" and "dry run" not in k[0]})
    beyond = counted - floor
    print(
        f"restart: operator started over {count} unchanged entries ({present} in the cluster) →"
        f" ready in {ready_after:.1f} s, all {present} reconciled in {all_done:.1f} s (goal ≤ 10 s)"
    )
    print(
        f"restart: writes to the API server {sum(counted.values())} ({listed(counted)}); "
        f"not counted: {listed(made - counted)}"
    )
    print(
        f"restart: floor, the same time with no operator running: {listed(floor)}; writes "
        f"beyond it: {sum(beyond.values())} ({listed(beyond)}); new revisions {new_revisions} "
        "(goal: 0 and 0)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--applies", type=int, default=200)
    add_layout_option(parser)  # of the latency runs (--applies)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between isolated applies")
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument(
        "--join", type=int, default=200, help="entries a namespace label change brings in"
    )
    parser.add_argument("--scale", type=int, default=5000)
    parser.add_argument(
        "--no-restart", action="store_true", help="skip the restart over the --scale entries"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            client = Client(KubeConfig.from_file(str(stack.kubeconfig)), field_manager="bench")
            if args.applies:
                bench_latency(client, stack, args.applies, args.pause, args.layout)
            else:
                stack.processes.append(start_operator(stack))
            if args.fanout:
                bench_fanout(client, stack.kubeconfig, args.fanout, args.join)
            if args.scale:
                operator = bench_scale(client, args.scale, stack)
                if args.no_restart:
                    operator.stop()
                else:
                    bench_restart(client, args.scale, stack, operator)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
