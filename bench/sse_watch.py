"""Change → Server-Sent Events client notified, with 1,000 clients watching, next to its floor.

Starts the local stack (kube-apiserver + etcd, PostgreSQL, Redis), caches one ConfigEntry in
Redis as the operator does (``Cache.put``) and runs ``ferry serve`` (one worker, and
``--serve-workers``). ``sse_clients.py``, a second process, opens ``--clients`` real SSE
connections to ``/v1/watch?namespace=…&name=payments``, each with the app's token (RBAC ``get``
on ``configentries``). Then, ``--changes`` times, the entry changes the way the operator changes
it: ``Cache.put`` of a new revision (the Lua script that writes the document and appends to the
change stream); the latency of each client is the time from just before that call to the moment
the client read the event (``time.monotonic``: one clock for every process on the machine).

Floor, in the same run: ``noop_sse_server.py``, a minimal aiohttp broadcaster holding the same
number of clients, each change a POST that it writes to every stream (no auth, no Redis).

Run: .venv/bin/python bench/sse_watch.py [--clients 1000] [--changes 20] [--workers 2]
(issue 12's goal: p99 < 250 ms with 1,000 connected clients)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from read_api import cache_config
from read_stack import HERE, NAMESPACE, Target, identities, start_serve, warm

from ferry.devenv.process import free_port, port_is_open, spawn, wait_until
from ferry.devenv.stack import Stack, start_stack

Trigger = Callable[[int], Awaitable[None]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    name: str, port: int, path: str, headers: list[str], trigger: Trigger, args: argparse.Namespace
) -> None:
    argv = [sys.executable, str(HERE / "sse_clients.py"), str(port), path, str(args.clients)]
    clients = await asyncio.create_subprocess_exec(
        *argv, *headers, stdout=asyncio.subprocess.PIPE, limit=1 << 24
    )
    assert clients.stdout is not None
    try:
        began = time.monotonic()
        line = await asyncio.wait_for(clients.stdout.readline(), 180)
        if line.strip() != b"ready":
            raise SystemExit(f"{name}: the clients did not all connect ({line!r})")
        connected = time.monotonic() - began
        latencies: list[float] = []
        for revision in range(args.first_revision, args.first_revision + args.changes):
            await asyncio.sleep(args.interval)
            changed = time.monotonic()
            await trigger(revision)
            line = await asyncio.wait_for(clients.stdout.readline(), 30)
            heard = json.loads(line)
            if heard["revision"] != revision:
                raise SystemExit(f"{name}: heard revision {heard['revision']}, not {revision}")
            latencies += [(at - changed) * 1000 for at in heard["at"]]
    finally:
        clients.kill()
        await clients.wait()
    print(
        f"  {name:<42} p50 {statistics.median(latencies):7.1f} ms  "
        f"p99 {percentile(latencies, 0.99):7.1f} ms  max {max(latencies):7.1f} ms  "
        f"({len(latencies)} notifications; {args.clients} connected in {connected:.1f} s)",
        flush=True,
    )


async def run(stack: Stack, args: argparse.Namespace) -> None:
    from ferry.adapters.cache import Cache

    server_token, app_token = identities(stack)
    await cache_config(stack.redis_url, 1)
    path = f"/v1/watch?namespace={NAMESPACE}&name=payments"
    auth = [f"Authorization: Bearer {app_token}"]
    config = f"/v1/configs/{NAMESPACE}/payments"

    floor = free_port()
    process = spawn(
        "noop-sse",
        [sys.executable, str(HERE / "noop_sse_server.py"), str(floor)],
        stack.directory / "noop-sse.log",
    )
    stack.processes.append(process)
    wait_until(process, lambda: port_is_open(floor), timeout=30, what="listening")

    async def publish(revision: int) -> None:
        body = json.dumps({"namespace": NAMESPACE, "name": "payments", "revision": revision})
        request = urllib.request.Request(f"http://127.0.0.1:{floor}/publish", body.encode())
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=30)

    cache = Cache(stack.redis_url)
    try:

        async def put(revision: int) -> None:
            await cache_config(stack.redis_url, revision, cache=cache)

        print(
            f"{args.clients} SSE clients (one process), {args.changes} changes "
            f"{args.interval:g} s apart; latency: change -> each client has the event",
            flush=True,
        )
        await measure("floor: minimal aiohttp broadcaster", floor, path, [], publish, args)
        for workers in sorted({1, args.workers}):
            port = start_serve(stack, server_token, workers)
            warm(
                {workers: port}, Target("", port, config, {"Authorization": f"Bearer {app_token}"})
            )
            args.first_revision += args.changes
            await measure(f"ferry serve --serve-workers {workers}", port, path, auth, put, args)
    finally:
        await cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between changes")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.first_revision = 2
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            asyncio.run(run(stack, args))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
