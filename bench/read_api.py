"""`ferry serve`: GET of a 2 KB config with a warm auth cache, 64 connections, next to its floors.

Starts the local stack (kube-apiserver + etcd, PostgreSQL, Redis), caches one ConfigEntry's
rendered config of about 2 KB in Redis exactly as the operator does (``Cache.put``), and runs
``ferry serve`` as its own service account (``system:auth-delegator`` only), with one worker
process and with ``--serve-workers`` (default 2). The caller is a service account with RBAC
``get`` on ``configentries``, presenting a token for the audience ``ferry`` in every request;
the first request warms the TokenReview and SubjectAccessReview caches (TTL 300 s here, so no
review happens during the run).

Floors, measured in the same run, serving the same bytes from memory (no auth, no Redis): nginx
(Debian's, one worker per core) and ``noop_read_server.py``, a minimal aiohttp handler, with one
process and with as many as Ferry's workers. The load comes from ``hey`` (read_stack.py: built
from the Go module proxy) in a second process over loopback, the same for every target:
``--connections`` keep-alive connections. Targets take turns, ``--rounds`` times ``--seconds``
each; the best round of each is printed with the median of all rounds.

Run: .venv/bin/python bench/read_api.py [--seconds 10] [--rounds 3] [--connections 64] [--workers 2]
(issue 12's goal: >= 10,000 req/s and p99 < 10 ms on a 2-core machine)
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from read_stack import (
    NAMESPACE,
    Target,
    arguments,
    compare,
    identities,
    on_stack,
    start_serve,
    warm,
)

from ferry.adapters.cache import Cache
from ferry.devenv.stack import Stack
from ferry.domain.hashing import content_hash
from ferry.domain.render import render


def config_data() -> dict[str, Any]:
    """About 2 KB rendered (config.json)."""
    return {
        "db": {"host": "db.payments.svc", "port": 5432, "poolSize": 40, "timeoutMs": 2500},
        "features": {f"flag{i:02}": i % 2 == 0 for i in range(20)},
        "endpoints": [f"https://api-{i}.payments.example.com/v1" for i in range(20)],
        "limits": {f"tenant-{i:02}": {"rps": 100 * i, "burst": 20 * i} for i in range(12)},
    }


async def cache_config(redis_url: str, revision: int = 1, *, cache: Cache | None = None) -> None:
    """The entry at ``revision`` cached as the operator caches it (through ``cache``, else a
    connection of its own)."""
    data = {**config_data(), "revision": revision}
    writer = cache or Cache(redis_url)
    try:
        await writer.put(
            NAMESPACE,
            "payments",
            revision=revision,
            content_hash=content_hash(data),
            data=data,
            rendered=render(data, "json"),
            format="json",
        )
    finally:
        if cache is None:
            await writer.close()


def main() -> None:
    args = arguments(__doc__ or "")
    on_stack(lambda stack: measure(stack, args))


def measure(stack: Stack, args: argparse.Namespace) -> None:
    server_token, app_token = identities(stack)
    asyncio.run(cache_config(stack.redis_url))
    request = Target(
        "", 0, f"/v1/configs/{NAMESPACE}/payments", {"Authorization": f"Bearer {app_token}"}
    )
    serving = {workers: start_serve(stack, server_token, workers) for workers in (1, args.workers)}
    headers, body = warm(serving, request)
    assert headers["X-Ferry-Source"] == "redis"
    compare(stack, args, serving, request, body, nginx=True)


if __name__ == "__main__":
    main()
