"""A bystander's admission latency while another namespace attacks the validation (issue 11).

Starts the whole local stack (kube-apiserver + etcd, PostgreSQL, Redis, the operator with its
webhooks). Two namespaces take turns request by request, server-side dry-run applying a small
ConfigEntry validated against a ConfigSchema (so the numbers are admission alone):

- ``bench-off``: no webhook (a ``namespaceSelector`` keeps Ferry's out): the floor,
- ``bench-bystander``: Ferry's webhooks, as any tenant has them,

first with nothing else going on, then during an attack from ``bench-hostile``: a ConfigSchema
within the complexity budget but costly for large data (900 ``anyOf`` branches; ~10 ms per list
item that matches none), stored with ``compatibility: None`` over entries that used a cheap one
(so the reconciler re-validates them), its costly variants swapped every few seconds, and
``--attackers`` clients sending costly ConfigEntries back to back (each a different 1,000-item
list, so no verdict is reused), then once more with nothing going on. Each phase prints
client-side p50/p99 for both namespaces (the floor measured beside them, in the same run), what
Ferry's webhooks add over the floor, and what the attackers' own requests got.

With ``--cheap`` the attack is the other kind (decision 0027): entries small enough, against a
flat schema, to be checked on the admission thread itself, each built to be the slowest such
check (``bench/inline_checks.py``'s widest case, refused, a new one each time), back to back.

Run: .venv/bin/python bench/hostile_tenant.py [--requests 300] [--attackers 3] [--cheap]
(goal: the bystander's added latency at p99 during the attack within 2x of without it)
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from admission_latency import LABEL, Api, percentile, scoped
from floors import register, saved_configurations
from inline_checks import cases as inline_cases

from ferry.devenv.controlplane import client_ssl_context
from ferry.devenv.process import run_kubectl
from ferry.devenv.stack import Stack, start_operator, start_stack

WARMUP = 20
HOSTILE = "bench-hostile"
VARIANTS = {"bystander": "bench-bystander", "off": "bench-off"}
LABELS = {"bystander": "Ferry's webhooks", "off": "no webhooks (floor)"}
HOSTILE_ENTRIES = 4

PAYMENTS = {
    "type": "object",
    "properties": {
        "db": {
            "type": "object",
            "properties": {
                "poolSize": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "host": {"type": "string", "maxLength": 200, "pattern": "^[a-z0-9.-]+$"},
            },
        }
    },
}


def costly_schema(variant: int) -> dict[str, Any]:
    branches = [{"type": "string", "pattern": f"^x{variant}-{i}-[a-z]+$"} for i in range(900)]
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"anyOf": branches}}},
    }


def costly_data(n: int) -> dict[str, Any]:
    return {"items": [f"nothing-matches-{n}-{i}" for i in range(1000)]}


def manifest(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


#: The slowest entry check the admission thread answers itself (``--cheap``).
CHEAP_CASE = "widest data, largest schema, json"


@functools.cache
def cheap_case() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Built once: the attackers' clients should spend their time sending, not building."""
    return inline_cases(0)[CHEAP_CASE]


def cheap_spec(n: int) -> dict[str, Any]:
    spec, _, _ = cheap_case()
    data = {key: f"{n}-{value}"[: len(value)] for key, value in spec["data"].items()}
    return {**spec, "schemaRef": {"name": "shape"}, "data": data}


def costly_spec(n: int) -> dict[str, Any]:
    return {"schemaRef": {"name": "shape"}, "data": costly_data(n)}


class Attack:
    """The hostile namespace's traffic, on its own connections, until stopped: ``attackers``
    clients applying ``spec_for(n)`` back to back, and (``swaps``) a costly schema variant
    stored every 5 s."""

    def __init__(
        self,
        port: int,
        context: Any,
        attackers: int,
        spec_for: Callable[[int], dict[str, Any]] = costly_spec,
        swaps: bool = True,
    ) -> None:
        self.port, self.context, self.attackers = port, context, attackers
        self.spec_for, self.swaps = spec_for, swaps
        self.stop = threading.Event()
        self.answers: list[tuple[float, str]] = []  # (ms, first words of the answer)
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.attackers):
            self.threads.append(threading.Thread(target=self._writes, args=(i,), daemon=True))
        if self.swaps:
            self.threads.append(threading.Thread(target=self._schema_swaps, daemon=True))
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _writes(self, worker: int) -> None:
        api = Api(self.port, self.context)
        n = worker * 1_000_000
        while not self.stop.is_set():
            n += 1
            spec = self.spec_for(n)
            began = time.perf_counter()
            try:
                api.apply(
                    "configentries",
                    f"flood-{worker}",
                    manifest("ConfigEntry", f"flood-{worker}", HOSTILE, spec),
                )
                answer = "admitted"
            except RuntimeError as refused:
                text = str(refused)
                answer = (
                    "ValidationTooCostly"
                    if "ValidationTooCostly" in text
                    else "busy"
                    if "could not be checked in time" in text
                    else "refused (schema violations)"
                    if "denied the request" in text
                    else text[:160]
                )
            self.answers.append(((time.perf_counter() - began) * 1000, answer))

    def _schema_swaps(self) -> None:
        api = Api(self.port, self.context)
        variant = 0
        while not self.stop.wait(5.0):
            variant += 1
            swap_schema(api, variant, self.stop)


def swap_schema(api: Api, variant: int, stop: threading.Event | None = None) -> None:
    """Store a costly variant of the hostile schema (``compatibility: None``), retrying while
    the namespace's own requests keep its validation worker busy."""
    spec = {"schema": costly_schema(variant), "compatibility": "None"}
    while not (stop and stop.is_set()):
        try:
            api.apply("configschemas", "shape", manifest("ConfigSchema", "shape", HOSTILE, spec))
            return
        except RuntimeError as refused:
            if "could not be checked in time" not in str(refused):
                raise


def bystander_payload(variant: str, n: int) -> dict[str, Any]:
    spec = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": n, "host": "db.x"}}}
    return manifest("ConfigEntry", "payments", VARIANTS[variant], spec)


def measure_bystander(api: Api, requests: int, start: int) -> dict[str, list[float]]:
    """``requests`` dry-run applies per namespace, taking turns; client-side milliseconds."""
    order = list(VARIANTS)
    for n in range(start, start + WARMUP):
        for variant in order:
            api.apply("configentries", "payments", bystander_payload(variant, n), dry_run=True)
    samples: dict[str, list[float]] = {variant: [] for variant in order}
    for i, n in enumerate(range(start + WARMUP, start + WARMUP + requests)):
        for variant in order[i % 2 :] + order[: i % 2]:
            began = time.perf_counter()
            api.apply("configentries", "payments", bystander_payload(variant, n), dry_run=True)
            samples[variant].append((time.perf_counter() - began) * 1000)
    return samples


def report(title: str, samples: dict[str, list[float]]) -> dict[str, float]:
    print(f"\n{title}")
    for variant, label in LABELS.items():
        print(
            f"  client, {label:<22} p50 {percentile(samples[variant], 0.5):7.2f} ms"
            f"  p99 {percentile(samples[variant], 0.99):7.2f} ms"
        )
    added = {
        q: percentile(samples["bystander"], q) - percentile(samples["off"], q) for q in (0.5, 0.99)
    }
    print(f"  Ferry's webhooks add p50 {added[0.5]:+.2f} ms, p99 {added[0.99]:+.2f} ms")
    return added


def setup(stack: Stack, api: Api) -> None:
    for variant, ns in [*VARIANTS.items(), ("hostile", HOSTILE)]:
        run_kubectl(stack.kubectl, stack.kubeconfig, "create", "namespace", ns)
        if variant == "off":
            run_kubectl(stack.kubectl, stack.kubeconfig, "label", "namespace", ns, f"{LABEL}=off")
    for variant, ns in VARIANTS.items():
        api.apply(
            "configschemas",
            "payments",
            manifest("ConfigSchema", "payments", ns, {"schema": PAYMENTS}),
        )
        api.apply("configentries", "payments", bystander_payload(variant, 1))
    # The hostile namespace's entries, valid against a cheap schema first.
    api.apply(
        "configschemas",
        "shape",
        manifest("ConfigSchema", "shape", HOSTILE, {"schema": {"type": "object"}}),
    )
    for i in range(HOSTILE_ENTRIES):
        spec = {"schemaRef": {"name": "shape"}, "data": costly_data(-1 - i)}
        api.apply("configentries", f"big-{i}", manifest("ConfigEntry", f"big-{i}", HOSTILE, spec))
    # Ferry's webhooks everywhere but in the floor's namespace.
    register(stack, scoped(copy.deepcopy(saved_configurations(stack)), "NotIn"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--attackers", type=int, default=3)
    parser.add_argument("--cheap", action="store_true", help="attack with inline checks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            stack.processes.append(start_operator(stack))
            run(stack, args.requests, args.attackers, args.cheap)
        finally:
            stack.stop()


def run(stack: Stack, requests: int, attackers: int, cheap: bool = False) -> None:
    kubeconfig = stack.kubeconfig
    port = int(re.search(r"127\.0\.0\.1:(\d+)", kubeconfig.read_text())[1])  # type: ignore[index]
    context = client_ssl_context(kubeconfig.parent / "pki")
    api = Api(port, context)
    setup(stack, api)
    sending = (
        "the slowest entries the admission thread checks itself, back to back"
        if cheap
        else f"costly entries back to back, {HOSTILE_ENTRIES} entries re-validated by the "
        "reconciler at every schema swap (every 5 s)"
    )
    print(
        f"{requests} dry-run applies per namespace and phase; attack: {attackers} clients "
        f"sending {sending}"
    )

    before = report("without an attack", measure_bystander(api, requests, 10_000))
    if cheap:
        _, _, schemas = cheap_case()
        flat = {**schemas["s"], "compatibility": "None"}
        api.apply("configschemas", "shape", manifest("ConfigSchema", "shape", HOSTILE, flat))
        attack = Attack(port, context, attackers, cheap_spec, swaps=False)
    else:
        swap_schema(api, 0)  # the hostile entries now cost seconds each to validate
        attack = Attack(port, context, attackers)
    attack.start()
    time.sleep(3)  # the attack under way: workers busy, the first ones killed
    during = report("during the attack", measure_bystander(api, requests, 20_000))
    attack.finish()
    after = report("after the attack", measure_bystander(api, requests, 30_000))

    answers = [a for _, a in attack.answers]
    times = [ms for ms, _ in attack.answers]
    print(
        f"\nattackers' own requests: {len(answers)} answered, "
        + ", ".join(f"{answers.count(k)} {k}" for k in sorted(set(answers)))
        + (f"; p50 {percentile(times, 0.5):.0f} ms, max {max(times):.0f} ms" if times else "")
    )
    ratio = during[0.99] / max(before[0.99], 1e-9)
    verdict = "met" if ratio <= 2 else "NOT met"
    print(
        f"bystander's added p99 during the attack: {during[0.99]:+.2f} ms vs {before[0.99]:+.2f} "
        f"ms without ({ratio:.1f}x; after: {after[0.99]:+.2f} ms); goal <= 2x: {verdict}"
    )
    print(json.dumps({"before": before, "during": during, "after": after}))


if __name__ == "__main__":
    main()
