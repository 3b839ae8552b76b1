"""Reconciliation benchmarks (issue: reconciliation). Prints figures next to their floors.

    .venv/bin/python bench/reconcile_bench.py [--applies 200] [--fanout 100] [--scale 5000]

Starts its own control plane, PostgreSQL, Redis and operator (webhooks on), like `ferry dev up`.
- latency: server-side apply of a ConfigEntry → its ConfigMap seen by a watch, p50/p99, next to
  the floor: a plain ConfigMap create against the same API server, in the same run. Measured
  with the admission webhooks (what a user sees) and again with their configurations taken out
  (reconciliation alone: the apply is then as cheap as the floor's create).
- fan-out: one entry into N accepting namespaces → status Ready with N targets synced.
- scale: N entries created while the operator is stopped → operator started → all Ready; the
  operator's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube import Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.core_v1 import ConfigMap, Namespace

from ferry.devenv.process import Process
from ferry.devenv.stack import start_operator, start_stack

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


class Seen:
    """Watch ConfigMaps in one namespace and note when each name first appears."""

    def __init__(self, client: Client, ns: str) -> None:
        self.times: dict[str, float] = {}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(client, ns), daemon=True)
        self._thread.start()
        time.sleep(0.5)

    def _run(self, client: Client, ns: str) -> None:
        try:
            for _, cm in client.watch(ConfigMap, namespace=ns):
                assert cm.metadata is not None
                seen = time.perf_counter()
                with self._changed:
                    self.times.setdefault(str(cm.metadata.name), seen)
                    self._changed.notify_all()
        except httpx.TransportError:
            pass  # the API server stopped at the end of the run

    def wait(self, name: str, timeout: float = 30) -> float:
        with self._changed:
            if not self._changed.wait_for(lambda: name in self.times, timeout=timeout):
                raise TimeoutError(f"ConfigMap {name} not seen within {timeout}s")
            return self.times[name]


class Webhooks:
    """Take Ferry's webhook configurations out and put them back: latency without admission."""

    KINDS = (ValidatingWebhookConfiguration, MutatingWebhookConfiguration)

    def __init__(self, client: Client) -> None:
        self.client = client
        self.saved = [client.get(kind, "ferry") for kind in self.KINDS]

    def off(self) -> None:
        for kind in self.KINDS:
            self.client.delete(kind, "ferry")
        time.sleep(1)  # the API server's webhook informer catches up

    def on(self) -> None:
        for obj in self.saved:
            assert obj.metadata is not None
            obj.metadata.resourceVersion = obj.metadata.uid = None
            obj.metadata.managedFields = None
            self.client.create(obj)
        time.sleep(1)


def percentiles(values: list[float]) -> str:
    return f"p50 {ms(percentile(values, 50))}  p99 {ms(percentile(values, 99))}"


def latency_phase(client: Client, ns: str, seen: Seen, prefix: str, applies: int) -> list[float]:
    """Apply ``applies`` new entries one after the other; print and return apply → seen times."""
    total, admitted = [], []
    for i in range(applies):
        start = time.perf_counter()
        client.apply(entry(f"{prefix}-{i}", ns, {"data": {"i": i}}), field_manager="bench")
        admitted.append(time.perf_counter() - start)
        total.append(seen.wait(f"{prefix}-{i}") - start)
    after = [t - a for t, a in zip(total, admitted, strict=True)]
    print(f"    apply request (admission included):  {percentiles(admitted)}")
    print(f"    apply returned → ConfigMap seen:     {percentiles(after)}")
    return total


def bench_latency(client: Client, applies: int) -> None:
    ns = namespace(client, "bench-lat")
    seen = Seen(client, ns)
    floor = []
    for i in range(applies):
        start = time.perf_counter()
        client.create(
            ConfigMap(
                metadata=ObjectMeta(name=f"plain-{i}", namespace=ns),
                data={"config.json": f'{{"i": {i}}}'},
            )
        )
        floor.append(time.perf_counter() - start)
    floor_p99 = percentile(floor, 99)
    print(f"latency over {applies} applies (apply → ConfigMap present)")
    print(f"  floor (plain ConfigMap create):          {percentiles(floor)}")
    webhooks = Webhooks(client)
    for label, prefix in (("webhooks on ", "e"), ("webhooks off", "off")):
        if prefix == "off":
            webhooks.off()
        total = latency_phase(client, ns, seen, prefix, applies)
        print(
            f"  ferry, {label} (ConfigEntry → ConfigMap): {percentiles(total)}  "
            f"(p99 = {percentile(total, 99) / floor_p99:.1f}x floor p99; goal <= 3x)"
        )
    webhooks.on()


def wait_ready(client: Client, ns: str, names: set[str], timeout: float) -> float:
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        ready = {
            str(e.metadata.name)
            for e in client.list(ConfigEntry, namespace=ns)
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (e.get("status") or {}).get("conditions", [])
            )
            and (e.get("status") or {}).get("observedGeneration") == e.metadata.generation
        }
        if names <= ready:
            return time.perf_counter() - start
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(names - ready)} entries not Ready after {timeout}s")
        time.sleep(0.2)


def bench_fanout(client: Client, count: int) -> None:
    src = namespace(client, "bench-fan")
    label = f"fan-{uuid.uuid4().hex[:6]}"
    for _ in range(count):
        namespace(client, "bench-fan-t", {"fan": label, "ferry.dev/accept": "true"})
    start = time.perf_counter()
    client.apply(
        entry(
            "fan",
            src,
            {"data": {"x": 1}, "target": {"namespaceSelector": {"matchLabels": {"fan": label}}}},
        ),
        field_manager="bench",
    )
    wait_ready(client, src, {"fan"}, timeout=300)
    obj = client.get(ConfigEntry, "fan", namespace=src)
    synced = sum(1 for t in obj.get("status", {}).get("targets", []) if t.get("synced"))
    print(
        f"fan-out: one entry into {count} namespaces → Ready with {synced} targets synced in "
        f"{time.perf_counter() - start:.2f} s"
    )


def bench_scale(client: Client, count: int, stack: Any, operator: Process) -> None:
    operator.stop()
    ns = namespace(client, "bench-scale")
    start = time.perf_counter()
    for i in range(count):
        client.create(entry(f"s-{i:05d}", ns, {"data": {"i": i, "name": f"s-{i}"}}))
    created = time.perf_counter() - start
    print(
        f"scale: created {count} entries with the operator stopped in {created:.1f} s "
        f"(floor: {created / count * 1000:.1f} ms per create)"
    )
    started = time.perf_counter()
    operator = start_operator(stack, timeout=1200)
    ready_after = time.perf_counter() - started
    print(f"scale: operator process started → ready (indexes filled) in {ready_after:.1f} s")
    peak = {"kb": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                for line in Path(f"/proc/{operator.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak["kb"] = max(peak["kb"], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    wait_ready(client, ns, {f"s-{i:05d}" for i in range(count)}, timeout=1800)
    done.set()
    print(
        f"scale: operator process started → all {count} Ready in "
        f"{time.perf_counter() - started:.1f} s; "
        f"operator peak RSS {peak['kb'] / 1024:.0f} MiB"
    )
    operator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--applies", type=int, default=200)
    parser.add_argument("--fanout", type=int, default=100)
    parser.add_argument("--scale", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        stack = start_stack(Path(tmp), with_operator=True)
        try:
            client = Client(KubeConfig.from_file(str(stack.kubeconfig)), field_manager="bench")
            if args.applies:
                bench_latency(client, args.applies)
            if args.fanout:
                bench_fanout(client, args.fanout)
            if args.scale:
                bench_scale(client, args.scale, stack, stack.processes[-1])
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
