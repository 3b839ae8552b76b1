"""``ferry serve``: the read API as its own stateless process (docs/read-api.md).

Nothing here is kept that another replica would need: configuration and flags come from Redis
(PostgreSQL when Redis cannot answer), identities and permissions from the Kubernetes API
(cached a few seconds), the change feed from the Redis stream. Run as many replicas as the load
needs; none of them is on the Kubernetes API's path except for uncached reviews.

Routes (also in ``openapi.json`` beside this file, served at ``/openapi.json``; a test checks the
two agree): ``/v1/configs/{namespace}/{name}``, ``/v1/watch``, ``/ofrep/v1/evaluate/flags[/{key}]``,
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``. The last four need no token: they say
nothing about any tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ferry.adapters.cache import CONFIG_EVENT, Cache, CacheUnavailable
from ferry.adapters.kube_auth import KubeAuth
from ferry.adapters.postgres import StoreUnavailable
from ferry.adapters.postgres.latest import LatestReader
from ferry.api import configs, metrics, ofrep, watch
from ferry.api.guard import Guard, status_response

#: Largest request body (an OFREP evaluation context); larger ones get 413.
MAX_BODY_BYTES = 256 * 1024


#: Documents kept in memory between changes (see ``watch.Mirror``): configs and flag sets.
MIRROR_ENTRIES = 10_000


def _mirror_key(change: watch.Change) -> tuple[Any, Any, Any]:
    """The key a change invalidates: (kind, namespace, name), name None for a flag set."""
    event = change.event
    return (event.get("kind", CONFIG_EVENT), event.get("namespace"), event.get("name"))


def openapi_document() -> bytes:
    return (resources.files("ferry.api") / "openapi.json").read_bytes()


@dataclass
class Parts:
    """What one ``ferry serve`` process talks to."""

    cache: Cache
    reader: LatestReader
    auth: KubeAuth
    audience: str | None
    default_bucketing: str
    heartbeat_seconds: float = 15.0
    watch_max_seconds: float = 1800.0
    flag_metric_limit: int = 0
    """Flags with series of their own in ``ferry_flag_evaluations_total`` (api.metrics)."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    finally:
        metrics.child(metrics.REQUESTS, route, str(code)).inc()
        if route != "/v1/watch":
            metrics.child(metrics.REQUEST_SECONDS, route).observe(time.perf_counter() - started)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as Kubernetes ``Status`` JSON, also aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return status_response(exc.status, message or exc.reason)


def make_app(parts: Parts) -> web.Application:
    app = web.Application(middlewares=[_measure, _errors], client_max_size=MAX_BODY_BYTES)
    guard = Guard(parts.auth, parts.audience)
    hub = watch.ChangeHub(parts.cache)
    mirror = watch.Mirror(hub, _mirror_key, MIRROR_ENTRIES)
    readiness = _Readiness(parts)

    configs.add_routes(app, guard, configs.ConfigSource(parts.cache, parts.reader, mirror))
    watch.add_routes(
        app,
        guard,
        hub,
        heartbeat_seconds=parts.heartbeat_seconds,
        max_seconds=parts.watch_max_seconds,
    )
    ofrep.add_routes(
        app,
        guard,
        ofrep.FlagSource(parts.cache, parts.reader, parts.default_bucketing, mirror=mirror),
        metrics.FlagSeries(parts.flag_metric_limit),
    )
    document = openapi_document()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        sources = await readiness.check()
        ok = any(up for up in sources.values())
        text = "\n".join(f"{name}: {'up' if up else 'down'}" for name, up in sources.items())
        return web.Response(text=text + "\n", status=200 if ok else 503)

    async def metrics_page(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/openapi.json", openapi)

    async def start(_: web.Application) -> None:
        await parts.reader.open()
        hub.start()

    async def stop(_: web.Application) -> None:
        await hub.stop()
        await parts.cache.close()
        await parts.reader.close()
        await parts.auth.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


class _Readiness:
    """Ready while Redis or PostgreSQL answers (either can serve); checked at most once a
    second, so probes from many kubelets do not become load."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._at = 0.0
        self._last: dict[str, bool] = {}
        self._lock = asyncio.Lock()

    async def check(self) -> dict[str, bool]:
        async with self._lock:
            if time.monotonic() - self._at < 1.0:
                return self._last
            redis_up = postgres_up = True
            try:
                await asyncio.wait_for(self.parts.cache.ping(), 2)
            except (CacheUnavailable, TimeoutError):
                redis_up = False
            try:
                await asyncio.wait_for(self.parts.reader.ping(), 2)
            except (StoreUnavailable, TimeoutError):
                postgres_up = False
            self._last = {"redis": redis_up, "postgres": postgres_up}
            self._at = time.monotonic()
            return self._last


async def run(
    app: web.Application, host: str, port: int, *, ready: asyncio.Event, reuse_port: bool = False
) -> None:
    """Serve until cancelled (SIGTERM), then finish what is in flight. ``reuse_port``: several
    processes listen on the port and the kernel spreads connections over them."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()
