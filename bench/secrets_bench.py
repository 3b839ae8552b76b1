"""Secrets from Vault (issue 16): many entries sharing few Vault paths, and a rotation of one.

    .venv/bin/python bench/secrets_bench.py [--entries 1000] [--paths 10] [--rotate 500]
        [--trigger one|each]

Starts its own kube-apiserver + etcd, PostgreSQL, Redis, a Vault dev server (with a file audit
device, so Vault itself counts the reads it answers) and the operator with its webhooks, like
`ferry dev up --vault`. Every entry has two secret keys: ``DB_PASSWORD`` from one of two
"shared" paths (each used by half the entries) and ``API_TOKEN`` from one of ``paths - 2`` "app"
paths; so ``paths`` distinct Vault paths in all, and one path used by ``entries / 2`` entries.

Phases, each figure printed next to its floor measured in the same run:

- floors, before the operator starts: hvac reads of the same paths alone; plain Secret creates
  (one client, one after the other) as many as there are entries; and the rotation floor, one
  hvac read then plain updates of ``rotate`` Secrets, timed from the start of the read.
- create: ``entries`` ConfigEntries created one after the other with the operator running,
  first create → every entry Ready (observedGeneration current); the Vault reads it took, from
  Vault's audit log and from the operator's ``ferry_vault_reads_total``; the operator's RSS.
- rotation: a new version written to one shared path, then ``ferry.dev/refresh`` set on one
  entry that uses it (``--trigger one``, the default: what any entry's scheduled refresh does
  too — the read that finds the new version re-renders every user of the path), or on each of
  the ``rotate`` entries that use it (``--trigger each``, 8 at a time); per entry, the
  Vault write → its Secret seen holding the new value by a watch: p50/p99/max (goal: p99 <
  5 s); the reads it took; and that the Secrets of the other entries were not written.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import hvac
from floors import each_at_once
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType
from reconcile_bench import (
    ConfigEntry,
    cpu_seconds,
    entry,
    is_ready,
    namespace,
    operator_metrics,
    percentile,
)

from ferry.devenv.process import Process
from ferry.devenv.stack import Stack, start_operator, start_stack
from ferry.devenv.vault import Vault

MOUNT = "secret"
PREFIX = "bench"
GOAL_ROTATION_P99 = 5.0


# --- Vault ---------------------------------------------------------------------------------------


def paths(count: int) -> tuple[list[str], list[str]]:
    """Two shared paths (key ``password``) and ``count - 2`` app paths (key ``token``)."""
    if count < 3:
        raise SystemExit("--paths must be at least 3 (two shared paths and an app path)")
    shared = [f"{PREFIX}/shared-{i}" for i in range(2)]
    apps = [f"{PREFIX}/app-{i}" for i in range(count - 2)]
    return shared, apps


def spec(i: int, shared: list[str], apps: list[str]) -> dict[str, Any]:
    return {
        "data": {"i": i},
        "secretData": {
            "DB_PASSWORD": {"vault": {"path": shared[i % 2], "key": "password"}},
            "API_TOKEN": {"vault": {"path": apps[i % len(apps)], "key": "token"}},
        },
    }


def write(vault: Vault, path: str, data: dict[str, str]) -> int:
    return int(vault.request("POST", f"{MOUNT}/data/{path}", {"data": data})["data"]["version"])


class AuditLog:
    """KV reads under ``bench/`` that Vault answered, from its file audit device."""

    def __init__(self, vault: Vault, file: Path) -> None:
        self.file = file
        vault.request(
            "PUT", "sys/audit/file", {"type": "file", "options": {"file_path": str(file)}}
        )

    def reads(self, path: str | None = None) -> int:
        wanted = f"{MOUNT}/data/{path}" if path else f"{MOUNT}/data/{PREFIX}/"
        count = 0
        with self.file.open() as lines:
            for line in lines:
                if '"type":"request"' not in line or wanted not in line:
                    continue
                request = json.loads(line).get("request") or {}
                where = str(request.get("path", ""))
                if request.get("operation") == "read" and (
                    where == wanted if path else where.startswith(wanted)
                ):
                    count += 1
        return count


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


# --- watching what the operator writes -----------------------------------------------------------


class Watch:
    """Watch one kind in one namespace from a thread; ``note`` sees every event with its time."""

    def __init__(self, client: Client, kind: Any, ns: str) -> None:
        self.changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(client, kind, ns), daemon=True)
        self._thread.start()
        time.sleep(0.5)  # the watch is established

    def _run(self, client: Client, kind: Any, ns: str) -> None:
        try:
            for _, obj in client.watch(kind, namespace=ns):
                seen = time.perf_counter()
                with self.changed:
                    self.note(obj, seen)
                    self.changed.notify_all()
        except httpx.TransportError:
            pass  # the API server stopped at the end of the run

    def note(self, obj: Any, seen: float) -> None:
        raise NotImplementedError

    def wait_for(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        with self.changed:
            if not self.changed.wait_for(done, timeout=timeout):
                raise TimeoutError(f"{what}: not within {timeout:.0f} s")


class ReadyEntries(Watch):
    """When each ConfigEntry was first seen Ready for its current generation."""

    def __init__(self, client: Client, ns: str) -> None:
        self.ready: dict[str, float] = {}
        super().__init__(client, ConfigEntry, ns)

    def note(self, obj: Any, seen: float) -> None:
        if is_ready(obj):
            self.ready.setdefault(str(obj.metadata.name), seen)


class SecretValues(Watch):
    """Every write of each Secret: (time seen, resourceVersion, DB_PASSWORD as stored)."""

    def __init__(self, client: Client, ns: str) -> None:
        self.writes: dict[str, list[tuple[float, str, str]]] = {}
        super().__init__(client, Secret, ns)

    def note(self, obj: Any, seen: float) -> None:
        value = (obj.data or {}).get("DB_PASSWORD", "")
        self.writes.setdefault(str(obj.metadata.name), []).append(
            (seen, str(obj.metadata.resourceVersion), value)
        )

    def first_with(self, name: str, value: str) -> float | None:
        return next((t for t, _, v in self.writes.get(name, []) if v == value), None)

    def written_since(self, names: Iterable[str], since: float) -> int:
        return sum(1 for n in names if any(t >= since for t, _, _ in self.writes.get(n, [])))


class OperatorProcess:
    """The operator's resident memory, sampled twice a second (current and peak, VmHWM), and the
    CPU time it has used."""

    def __init__(self, process: Process) -> None:
        self.pid = process.pid
        self.peak_kb = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def rss_kb(self) -> int:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
        )
        self.peak_kb = max(self.peak_kb, int(fields["VmHWM"].split()[0]))
        return int(fields["VmRSS"].split()[0])

    def cpu_seconds(self) -> float:
        """User + system CPU time so far."""
        return cpu_seconds(self.pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss_kb()
            except OSError:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()


def reconciles(figures: dict[str, float]) -> str:
    count, seconds = figures["reconciles"], figures["reconcile_seconds"]
    return f"{count:.0f} ConfigEntry reconciles, {seconds / count * 1000:.0f} ms each on average"


def mib(kb: float) -> str:
    return f"{kb / 1024:.0f} MiB"


def stats(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):6.2f} s  p99 {percentile(values, 99):6.2f} s  "
        f"max {max(values):6.2f} s"
    )


# --- floors --------------------------------------------------------------------------------------


def floor_hvac_reads(vault: Vault, all_paths: list[str], rounds: int = 5) -> list[float]:
    """Seconds per pass of hvac reads of every path once (a fresh client per pass)."""
    times = []
    for _ in range(rounds):
        client = hvac.Client(url=vault.address, token=vault.root_token)
        start = time.perf_counter()
        for path in all_paths:
            client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=MOUNT, raise_on_deleted_version=True
            )
        times.append(time.perf_counter() - start)
        client.adapter.close()
    return times


def floor_secret_creates(client: Client, ns: str, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        client.create(
            Secret(
                metadata=ObjectMeta(name=f"plain-{i:05d}", namespace=ns),
                type="Opaque",
                stringData={"DB_PASSWORD": secrets.token_hex(16), "API_TOKEN": "x"},
            )
        )
    return time.perf_counter() - start


def floor_rotation(client: Client, vault: Vault, ns: str, path: str, count: int) -> list[float]:
    """One hvac read of ``path``, then ``count`` plain Secret updates; seconds from the start of
    the read to each update's answer."""
    hv = hvac.Client(url=vault.address, token=vault.root_token)
    start = time.perf_counter()
    answer = hv.secrets.kv.v2.read_secret_version(
        path=path, mount_point=MOUNT, raise_on_deleted_version=True
    )
    encoded = base64.b64encode(answer["data"]["data"]["password"].encode()).decode()
    done = []
    for i in range(count):
        patch = {"data": {"DB_PASSWORD": encoded}}
        client.patch(Secret, plain_name(i), patch, namespace=ns, patch_type=PatchType.MERGE)
        done.append(time.perf_counter() - start)
    hv.adapter.close()
    return done


def annotate_all(client: Client, kind: Any, ns: str, names: list[str]) -> dict[str, float]:
    """Set ``ferry.dev/refresh`` to a new value on each object (8 at a time, as a script or a
    GitOps tool would); when each patch was answered."""
    patch = {"metadata": {"annotations": {"ferry.dev/refresh": uuid.uuid4().hex[:8]}}}

    async def annotate(api: AsyncClient, name: str) -> tuple[str, float]:
        await api.patch(kind, name, patch, namespace=ns, patch_type=PatchType.MERGE)
        return name, time.perf_counter()

    return dict(each_at_once(client, names, annotate, 8))


def plain_name(i: int) -> str:
    return f"plain-{i:05d}"


# --- the run -------------------------------------------------------------------------------------


class Run:
    def __init__(
        self, stack: Stack, entries: int, path_count: int, rotate: int, trigger: str
    ) -> None:
        self.stack = stack
        self.trigger = trigger
        self.client = Client(KubeConfig.from_file(str(stack.kubeconfig)), field_manager="bench")
        self.vault = Vault(stack.extra["VAULT_ADDR"], stack.extra["VAULT_TOKEN"])
        self.shared, self.apps = paths(path_count)
        self.all_paths = self.shared + self.apps
        self.names = [f"e-{i:05d}" for i in range(entries)]
        self.rotated_path = self.shared[0]
        self.rotated = [n for i, n in enumerate(self.names) if i % 2 == 0][:rotate]
        self.others = [n for i, n in enumerate(self.names) if i % 2 == 1]
        for path in self.shared:
            write(self.vault, path, {"password": secrets.token_hex(16)})
        for path in self.apps:
            write(self.vault, path, {"token": secrets.token_hex(16)})
        self.audit = AuditLog(self.vault, stack.directory / "vault-audit.log")

    def floors(self) -> None:
        """Before the operator starts, so nothing else runs."""
        self.load_before = os.getloadavg()[0]
        self.hvac_passes = floor_hvac_reads(self.vault, self.all_paths)
        ns = namespace(self.client, "bench-floor")
        self.plain_count = max(len(self.names), len(self.rotated))
        self.creates_floor = floor_secret_creates(self.client, ns, self.plain_count)
        self.rotation_floor = floor_rotation(
            self.client, self.vault, ns, self.rotated_path, len(self.rotated)
        )
        plain = [plain_name(i) for i in range(len(self.rotated))]
        start = time.perf_counter()
        annotate_all(self.client, Secret, ns, plain)
        self.annotate_floor = time.perf_counter() - start

    def start_operator(self) -> None:
        # Entries in any namespace may name paths under bench/ (an operator setting).
        self.stack.extra["FERRY_VAULT_ALLOWED_PATH_PREFIXES"] = PREFIX
        process = start_operator(self.stack)
        self.stack.processes.append(process)
        self.operator = OperatorProcess(process)
        self.api_url = self.stack.extra["FERRY_API_URL"]
        time.sleep(2)
        self.idle_kb = self.operator.rss_kb()

    def create(self) -> None:
        reads, metrics = self.audit.reads(), operator_metrics(self.api_url)
        cpu = self.operator.cpu_seconds()
        self.ns = namespace(self.client, "bench-sec")
        ready = ReadyEntries(self.client, self.ns)
        self.values = SecretValues(self.client, self.ns)
        start = time.perf_counter()
        for i, name in enumerate(self.names):
            self.client.create(entry(name, self.ns, spec(i, self.shared, self.apps)))
        self.created = time.perf_counter() - start
        ready.wait_for(
            lambda: len(ready.ready) >= len(self.names), timeout=3600, what="every entry Ready"
        )
        self.all_ready = max(ready.ready.values()) - start
        self.create_cpu = self.operator.cpu_seconds() - cpu
        self.ready_kb = self.operator.rss_kb()
        time.sleep(2)  # any straggling reads land in the audit log
        self.create_reads = self.audit.reads() - reads
        self.create_metrics = delta(operator_metrics(self.api_url), metrics)
        missing = [n for n in self.names if not self.values.writes.get(n)]
        if missing:
            raise RuntimeError(f"{len(missing)} entries Ready without a Secret, e.g. {missing[0]}")

    def rotate(self) -> None:
        """A new version of one shared path, then the on-demand refresh of its users."""
        reads, metrics = self.audit.reads(self.rotated_path), operator_metrics(self.api_url)
        cpu = self.operator.cpu_seconds()
        value = secrets.token_hex(16)
        encoded = base64.b64encode(value.encode()).decode()
        written = time.perf_counter()
        write(self.vault, self.rotated_path, {"password": value})
        if self.trigger == "one":  # one user's refresh; the others follow from its read
            asked = annotate_all(self.client, ConfigEntry, self.ns, self.rotated[:1])
            annotated = dict.fromkeys(self.rotated, asked[self.rotated[0]])
        else:
            annotated = annotate_all(self.client, ConfigEntry, self.ns, self.rotated)
        self.annotating = max(annotated.values()) - written
        values = self.values
        values.wait_for(
            lambda: all(values.first_with(n, encoded) is not None for n in self.rotated),
            timeout=900,
            what=f"the new value in all {len(self.rotated)} Secrets",
        )
        seen = {n: values.first_with(n, encoded) or math.nan for n in self.rotated}
        self.latencies = [seen[n] - written for n in self.rotated]
        self.after_annotation = [seen[n] - annotated[n] for n in self.rotated]
        self.rotation_cpu = self.operator.cpu_seconds() - cpu
        time.sleep(2)
        self.rotation_reads = self.audit.reads(self.rotated_path) - reads
        self.rotation_metrics = delta(operator_metrics(self.api_url), metrics)
        self.others_written = values.written_since(self.others, written)
        self.operator.rss_kb()
        self.operator.stop()

    def report(self) -> None:
        entries, rotated, n_paths = len(self.names), len(self.rotated), len(self.all_paths)
        hvac_ms = sorted(p * 1000 for p in self.hvac_passes)
        print(f"secrets: {entries} entries x 2 secret keys over {n_paths} Vault paths, webhooks on")
        print(
            f"  floor: hvac reads of the {n_paths} paths alone, one after the other: best "
            f"{hvac_ms[0]:.1f} ms, median {hvac_ms[len(hvac_ms) // 2]:.1f} ms per pass"
        )
        print(
            f"  floor: {self.plain_count} plain Secret creates (one client, one after the other):"
            f" {self.creates_floor:.1f} s ({self.creates_floor / self.plain_count * 1000:.1f} ms"
            " each)"
        )
        print(
            f"  create: {entries} ConfigEntry creates (one client, one after the other) took "
            f"{self.created:.1f} s ({self.created / entries * 1000:.1f} ms each); first create →"
            f" all {entries} Ready {self.all_ready:.1f} s "
            f"({self.all_ready / self.creates_floor:.1f}x the plain Secret creates); operator CPU"
            f" {self.create_cpu:.1f} s ({self.create_cpu / entries * 1000:.1f} ms per entry)"
        )
        print(
            f"  create: {reconciles(self.create_metrics)}; Vault reads {self.create_reads} by "
            f"Vault's audit log, {self.create_metrics['vault_reads']:.0f} by "
            f"ferry_vault_reads_total (floor: {n_paths}, one per distinct path)"
        )
        print(
            f"  operator RSS: idle after start {mib(self.idle_kb)} (floor), all Ready "
            f"{mib(self.ready_kb)}, peak (VmHWM) {mib(self.operator.peak_kb)}"
        )
        trigger = "one of them" if self.trigger == "one" else "each (8 at a time)"
        print(
            f"rotation: a new version of {self.rotated_path} (used by {rotated} entries), then "
            f"ferry.dev/refresh set on {trigger}"
        )
        if self.trigger == "each":
            print(
                f"  floor: {rotated} annotation patches on plain Secrets (8 at a time, no "
                f"webhooks): {self.annotate_floor:.2f} s; on the entries (webhooks on): "
                f"{self.annotating:.2f} s"
            )
        print(
            f"  floor: 1 hvac read + {rotated} plain Secret updates  {stats(self.rotation_floor)}"
        )
        print(f"  ferry: Vault write → Secret updated         {stats(self.latencies)}")
        print(f"  ferry: the annotation answered → Secret updated  {stats(self.after_annotation)}")
        verdict = "met" if percentile(self.latencies, 99) < GOAL_ROTATION_P99 else "NOT met"
        print(f"  goal p99 < {GOAL_ROTATION_P99:g} s (Vault write → Secret updated): {verdict}")
        print(
            f"  rotation: Vault reads of {self.rotated_path} {self.rotation_reads} by Vault's "
            f"audit log, {self.rotation_metrics['vault_reads']:.0f} by ferry_vault_reads_total "
            f"(floor: 1); Secrets of the other {len(self.others)} entries written: "
            f"{self.others_written}"
        )
        print(
            f"  rotation: {reconciles(self.rotation_metrics)}; "
            f"operator CPU {self.rotation_cpu:.1f} s"
        )
        print(f"  operator peak RSS over the run (VmHWM): {mib(self.operator.peak_kb)}")
        print(
            f"machine load average (1 min): {self.load_before:.1f} before the floors, "
            f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--paths", type=int, default=10)
    parser.add_argument("--rotate", type=int, default=500, help="users of the rotated path")
    parser.add_argument(
        "--trigger",
        choices=["one", "each"],
        default="one",
        help="ferry.dev/refresh set on one user of the rotated path, or on each",
    )
    args = parser.parse_args()
    if args.rotate > (args.entries + 1) // 2:
        raise SystemExit("--rotate can be at most half of --entries (the users of one path)")
    with tempfile.TemporaryDirectory(prefix="ferry-bench-secrets-") as tmp:
        stack = start_stack(Path(tmp), with_vault=True)
        try:
            bench = Run(stack, args.entries, args.paths, args.rotate, args.trigger)
            bench.floors()
            bench.start_operator()
            bench.create()
            bench.rotate()
            bench.report()
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
