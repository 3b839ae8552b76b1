"""`ferry serve`: GET of a 2 KB config with a warm auth cache, 64 connections, next to its floor.

Starts the local stack (kube-apiserver + etcd, PostgreSQL, Redis), caches one ConfigEntry's
rendered config of about 2 KB in Redis exactly as the operator does (``Cache.put``), and runs
``ferry serve`` as its own service account (``system:auth-delegator`` only). The caller is a
service account with RBAC ``get`` on ``configentries``, presenting a token for the audience
``ferry`` in every request; the first request warms the TokenReview and SubjectAccessReview
caches (TTL set to 300 s here so that no review happens during the run).

The floor, measured in the same run: ``noop_read_server.py``, a minimal aiohttp handler serving
the same bytes from memory (no auth, no Redis). The load comes from ``http_load.py`` in a second
process over loopback: 64 keep-alive connections, one request after the other each. Floor and
Ferry take turns, ``--rounds`` times ``--seconds`` each, so both meet the machine in the same
state; the best round of each is printed with the median of all rounds.

Run: .venv/bin/python bench/read_api.py [--seconds 10] [--rounds 3] [--connections 64]
(issue 12's goal: >= 10,000 req/s and p99 < 10 ms on a 2-core machine)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from ferry.adapters.cache import Cache
from ferry.devenv.process import Process, free_port, port_is_open, spawn, wait_until
from ferry.devenv.stack import Stack, run_kubectl, start_stack
from ferry.domain.hashing import content_hash
from ferry.domain.render import render

HERE = Path(__file__).parent
NAMESPACE = "bench-read"


def config_data() -> dict[str, Any]:
    """About 2 KB rendered (config.json)."""
    return {
        "db": {"host": "db.payments.svc", "port": 5432, "poolSize": 40, "timeoutMs": 2500},
        "features": {f"flag{i:02}": i % 2 == 0 for i in range(20)},
        "endpoints": [f"https://api-{i}.payments.example.com/v1" for i in range(20)],
        "limits": {f"tenant-{i:02}": {"rps": 100 * i, "burst": 20 * i} for i in range(12)},
    }


def kubectl(stack: Stack, *args: str, stdin: str | None = None) -> str:
    if stdin is None:
        return run_kubectl(stack.kubectl, stack.kubeconfig, *args)
    result = subprocess.run(
        [str(stack.kubectl), f"--kubeconfig={stack.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def apply(stack: Stack, *objects: dict[str, Any]) -> None:
    kubectl(stack, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))


def server_kubeconfig(stack: Stack, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster with ``token`` as the user: ``ferry serve``'s identity."""
    admin = yaml.safe_load(stack.kubeconfig.read_text())
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority"))
        ca = ca if ca.is_absolute() else stack.kubeconfig.parent / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def identities(stack: Stack) -> tuple[str, str]:
    """(ferry serve's token for the API server, the app's token for Ferry)."""
    apply(
        stack,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ferry-system"}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "ferry-serve", "namespace": "ferry-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ferry-serve-auth-delegator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "ferry-serve", "namespace": "ferry-system"}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "app", "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read", "namespace": NAMESPACE},
            "rules": [
                {"apiGroups": ["ferry.dev"], "resources": ["configentries"], "verbs": ["get"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": NAMESPACE}],
        },
    )
    server = kubectl(stack, "create", "token", "ferry-serve", "-n", "ferry-system", "--duration=2h")
    app = kubectl(
        stack, "create", "token", "app", "-n", NAMESPACE, "--audience=ferry", "--duration=2h"
    )
    return server.strip(), app.strip()


async def cache_config(redis_url: str) -> None:
    data = config_data()
    cache = Cache(redis_url)
    try:
        await cache.put(
            NAMESPACE,
            "payments",
            revision=1,
            content_hash=content_hash(data),
            data=data,
            rendered=render(data, "json"),
            format="json",
        )
    finally:
        await cache.close()


def load(
    port: int, path: str, seconds: float, connections: int, headers: list[str]
) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / "http_load.py"), str(port), path, str(seconds)]
    argv += [str(connections), *headers]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=True)
    return dict(json.loads(result.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            measure(stack, Path(tmp), args)
        finally:
            stack.stop()


def measure(stack: Stack, directory: Path, args: argparse.Namespace) -> None:
    server_token, app_token = identities(stack)
    asyncio.run(cache_config(stack.redis_url))

    port = free_port()
    env = {
        **os.environ,
        **stack.env(),
        "KUBECONFIG": str(server_kubeconfig(stack, server_token, directory / "serve.kubeconfig")),
    }
    argv = [sys.executable, "-m", "ferry", "serve", "--serve-port", str(port)]
    argv += ["--serve-auth-cache-ttl-seconds", "300"]
    serve: Process = spawn("ferry-serve", argv, directory / "serve.log", env=env)
    stack.processes.append(serve)
    wait_until(serve, lambda: port_is_open(port), timeout=60, what="listening")

    path = f"/v1/configs/{NAMESPACE}/payments"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", f"Bearer {app_token}")
    with urllib.request.urlopen(request, timeout=10) as response:  # warms the auth caches
        body = response.read()
        assert response.status == 200 and response.headers["X-Ferry-Source"] == "redis"
    (directory / "body.json").write_bytes(body)
    floor_port = free_port()
    floor = spawn(
        "noop-read",
        [
            sys.executable,
            str(HERE / "noop_read_server.py"),
            str(floor_port),
            str(directory / "body.json"),
        ],
        directory / "floor.log",
    )
    stack.processes.append(floor)
    wait_until(floor, lambda: port_is_open(floor_port), timeout=30, what="listening")

    print(
        f"GET {path}: {len(body)} bytes, {args.connections} connections, "
        f"{args.rounds} rounds x {args.seconds:g} s each, load from a second process"
    )
    targets = {
        "floor: minimal aiohttp handler, same bytes": (floor_port, []),
        "ferry serve (token + RBAC checked, Redis read)": (
            port,
            [f"Authorization: Bearer {app_token}"],
        ),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (target, headers) in targets.items():
            outcome = load(target, path, args.seconds, args.connections, headers)
            if outcome["errors"]:
                raise SystemExit(f"{name}: {outcome['errors']} requests did not answer 200")
            results[name].append(outcome)
    for name, rounds in results.items():
        best = max(rounds, key=lambda r: r["rate"])
        median = statistics.median(r["rate"] for r in rounds)
        print(
            f"  {name:<48} {best['rate']:8.0f} req/s (median {median:7.0f})"
            f"  p50 {best['p50_ms']:6.2f} ms  p99 {best['p99_ms']:6.2f} ms"
        )


if __name__ == "__main__":
    main()
