"""What Ferry's admission webhooks add to a `kubectl apply` of a ConfigEntry.

Starts the whole local stack (kube-apiserver + etcd, PostgreSQL, Redis, the operator with its
webhooks), then server-side applies a 10 KB ConfigEntry validated against a 50-property
ConfigSchema, changing one value each time, over one keep-alive HTTPS connection:

1. with the webhooks registered (mutating stamp + validating check),
2. the same applies with both webhook configurations deleted: the floor,
3. with a webhook that checks nothing (``noop_webhook.py``, same configurations, same aiohttp and
   TLS stack) in their place: the floor for any out-of-process webhook on this machine,
4. with Ferry's webhooks registered again (to see drift between phases).

For each phase it prints client-side p50/p99 and the API server's own view from its /metrics:
``apiserver_request_duration_seconds`` for the APPLY of configentries (whole request) and
``apiserver_admission_webhook_admission_duration_seconds`` per webhook (time spent calling it),
and the operator's ``ferry_admission_duration_seconds`` (time answering, inside the operator).
Histogram quantiles are interpolated within the API server's buckets, as Prometheus'
``histogram_quantile`` does; the webhook histogram's smallest buckets are 5 ms and 25 ms, so its
quantiles are coarse, and the client-side difference on - off is the sharper figure.

Run: .venv/bin/python bench/admission_latency.py [--requests 500]   (goal: webhook adds <= 10 ms
at p99)
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import ssl
import statistics
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from floors import register, saved_configurations, start_noop_webhook

from ferry.devenv.controlplane import client_ssl_context
from ferry.devenv.stack import Stack, run_kubectl, start_operator, start_stack

GOAL_MS = 10.0
PROPERTIES = 50
WARMUP = 30
NAMESPACE = "bench"


def schema_body() -> dict[str, Any]:
    """50 properties: strings with a pattern and a length bound, integers with a range."""
    properties: dict[str, Any] = {}
    for i in range(PROPERTIES):
        if i % 5 == 0:
            properties[f"p{i:02}"] = {"type": "integer", "minimum": 0, "maximum": 1_000_000}
        else:
            properties[f"p{i:02}"] = {
                "type": "string",
                "maxLength": 400,
                "pattern": "^[a-z0-9-]+$",
            }
    return {
        "type": "object",
        "required": [f"p{i:02}" for i in range(PROPERTIES)],
        "additionalProperties": False,
        "properties": properties,
    }


def entry_data(n: int) -> dict[str, Any]:
    """About 10 KB of JSON satisfying the schema; ``n`` changes one value per apply."""
    data: dict[str, Any] = {}
    for i in range(PROPERTIES):
        data[f"p{i:02}"] = n + i if i % 5 == 0 else f"value-{i:02}-" + "x" * 240
    return data


class Api:
    """One keep-alive HTTPS connection to the API server with the admin client certificate."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = "") -> bytes:
        headers = {"Content-Type": ctype} if ctype else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        payload = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:500]!r}")
        return payload

    def apply(self, resource: str, name: str, obj: dict[str, Any], dry_run: bool = False) -> None:
        path = (
            f"/apis/ferry.dev/v1alpha1/namespaces/{NAMESPACE}/{resource}/{name}"
            "?fieldManager=bench&force=true" + ("&dryRun=All" if dry_run else "")
        )
        self.request("PATCH", path, json.dumps(obj).encode(), "application/apply-patch+yaml")

    def metrics(self) -> str:
        return self.request("GET", "/metrics").decode()


# ------------------------------------------------------------------------------- histograms

_SAMPLE = re.compile(r"^(?P<name>[a-z_:]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
Histogram = dict[float, float]  # upper bound -> cumulative count


def histograms(text: str, metric: str, **match: str) -> dict[str, Histogram]:
    """Bucket counts of ``metric`` per ``name`` label (or one series), filtered by ``match``."""
    found: dict[str, Histogram] = defaultdict(dict)
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if not sample or sample["name"] != f"{metric}_bucket":
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', sample["labels"]))
        if any(labels.get(k) != v for k, v in match.items()):
            continue
        bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        key = labels.get("name") or labels.get("webhook") or "request"
        found[key][bound] = found[key].get(bound, 0.0) + float(sample["value"])
    return dict(found)


def delta(after: Histogram, before: Histogram) -> Histogram:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def quantile(q: float, buckets: Histogram) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


# ------------------------------------------------------------------------------------ phases


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def operator_metrics(stack: Stack) -> str:
    with urllib.request.urlopen(f"{stack.extra['FERRY_API_URL']}/metrics", timeout=5) as r:
        return str(r.read().decode())


Phase = tuple[list[float], str, str, str, str]


def run_phase(api: Api, stack: Stack, requests: int, start: int, dry_run: bool = False) -> Phase:
    for n in range(start, start + WARMUP):
        api.apply("configentries", "payments", entry_payload(n), dry_run)
    before, operator_before = api.metrics(), operator_metrics(stack)
    samples = []
    for n in range(start + WARMUP, start + WARMUP + requests):
        payload = entry_payload(n)
        began = time.perf_counter()
        api.apply("configentries", "payments", payload, dry_run)
        samples.append((time.perf_counter() - began) * 1000)
    return samples, before, api.metrics(), operator_before, operator_metrics(stack)


def entry_payload(n: int) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments", "namespace": NAMESPACE},
        "spec": {"schemaRef": {"name": "payments"}, "data": entry_data(n)},
    }


def report(
    label: str,
    samples: list[float],
    before: str,
    after: str,
    operator_before: str,
    operator_after: str,
) -> dict[str, float]:
    request = delta(
        histograms(
            after, "apiserver_request_duration_seconds", verb="APPLY", resource="configentries"
        )["request"],
        histograms(
            before, "apiserver_request_duration_seconds", verb="APPLY", resource="configentries"
        )["request"],
    )
    row = {
        "client_p50": percentile(samples, 0.50),
        "client_p99": percentile(samples, 0.99),
        "client_mean": statistics.fmean(samples),
        "server_p50": quantile(0.50, request) * 1000,
        "server_p99": quantile(0.99, request) * 1000,
    }
    print(
        f"{label:<14} client p50 {row['client_p50']:6.2f} ms  p99 {row['client_p99']:6.2f} ms"
        f"  | API server APPLY p50 {row['server_p50']:6.2f} ms  p99 {row['server_p99']:6.2f} ms"
    )
    hooks_after = histograms(after, "apiserver_admission_webhook_admission_duration_seconds")
    hooks_before = histograms(before, "apiserver_admission_webhook_admission_duration_seconds")
    for hook, buckets in sorted(hooks_after.items()):
        calls = delta(buckets, hooks_before.get(hook, {}))
        if max(calls.values(), default=0) <= 0:
            continue
        print(
            f"{'':<14} webhook {hook:<34} p50 {quantile(0.5, calls) * 1000:6.2f} ms"
            f"  p99 {quantile(0.99, calls) * 1000:6.2f} ms  ({int(max(calls.values()))} calls)"
        )
    inside_after = histograms(operator_after, "ferry_admission_duration_seconds")
    inside_before = histograms(operator_before, "ferry_admission_duration_seconds")
    for hook, buckets in sorted(inside_after.items()):
        calls = delta(buckets, inside_before.get(hook, {}))
        if max(calls.values(), default=0) <= 0:
            continue
        print(
            f"{'':<14} inside operator {hook:<26} p50 {quantile(0.5, calls) * 1000:6.2f} ms"
            f"  p99 {quantile(0.99, calls) * 1000:6.2f} ms"
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            stack.processes.append(start_operator(stack))
            measure(stack, args.requests)
        finally:
            stack.stop()


def measure(stack: Stack, requests: int) -> None:
    kubeconfig = stack.kubeconfig
    port = int(re.search(r"127\.0\.0\.1:(\d+)", kubeconfig.read_text())[1])  # type: ignore[index]
    api = Api(port, client_ssl_context(kubeconfig.parent / "pki"))
    run_kubectl(stack.kubectl, kubeconfig, "create", "namespace", NAMESPACE)
    schema = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ConfigSchema",
        "metadata": {"name": "payments", "namespace": NAMESPACE},
        "spec": {"schema": schema_body()},
    }
    api.apply("configschemas", "payments", schema)
    size = len(json.dumps(entry_payload(0)["spec"]["data"]))
    print(f"entry data {size} bytes, schema {PROPERTIES} properties, {requests} applies per phase")

    noop, noop_hooks = start_noop_webhook(stack)
    stack.processes.append(noop)
    registered = {"on": saved_configurations(stack), "off": [], "no-op": noop_hooks}

    offset = 0
    for dry_run, title in (
        (False, "stored applies (the operator reconciles every change meanwhile)"),
        (True, "server-side dry-run applies (admission only: nothing stored, nothing reconciled)"),
    ):
        print(f"\n{title}")
        rows = {}
        for label in ("on", "off", "no-op", "on again"):
            if label != "on":
                register(stack, registered[label.removesuffix(" again")])
            offset += 10_000
            name = "no-op webhook" if label == "no-op" else f"webhooks {label}"
            rows[label] = report(name, *run_phase(api, stack, requests, offset, dry_run))

        summarize(rows)


def summarize(rows: dict[str, dict[str, float]]) -> None:
    """What Ferry's webhooks add over no webhook, and over a webhook that checks nothing."""

    def added(key: str, over: str) -> float:
        on = statistics.fmean([rows["on"][key], rows["on again"][key]])
        return on - rows[over][key]

    verdict = "met" if added("client_p99", "off") <= GOAL_MS else "NOT met"
    print(
        f"Ferry's webhooks add (client, mean of both 'on' phases - no webhooks): "
        f"p50 {added('client_p50', 'off'):+.2f} ms, p99 {added('client_p99', 'off'):+.2f} ms; "
        f"goal <= {GOAL_MS:.0f} ms at p99: {verdict}"
    )
    noop_p50 = rows["no-op"]["client_p50"] - rows["off"]["client_p50"]
    noop_p99 = rows["no-op"]["client_p99"] - rows["off"]["client_p99"]
    print(
        f"  floor: a no-op webhook pair adds p50 {noop_p50:+.2f} ms, p99 {noop_p99:+.2f} ms; "
        f"Ferry's beyond it: p50 {added('client_p50', 'no-op'):+.2f} ms, "
        f"p99 {added('client_p99', 'no-op'):+.2f} ms"
    )


if __name__ == "__main__":
    main()
