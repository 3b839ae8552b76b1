"""``ferry serve``: the read API as its own stateless process (docs/read-api.md).

Nothing here is kept that another replica would need: configuration and flags come from Redis
(PostgreSQL when Redis cannot answer), identities and permissions from the Kubernetes API
(cached a few seconds), the change feed from the Redis stream. Run as many replicas as the load
needs; none of them is on the Kubernetes API's path except for uncached reviews.

Routes (also in ``openapi.json`` beside this file, served at ``/openapi.json``; a test checks the
two agree): ``/v1/configs/{namespace}/{name}``, ``/v1/watch``, ``/ofrep/v1/evaluate/flags[/{key}]``,
``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``. The last four need no token: they say
nothing about any tenant.

What a connection may hold (aiohttp bounds none of it by default): :data:`KEEPALIVE_SECONDS` to
send a request's headers, from when it opened or from the previous answer; at most
:data:`MAX_HEADERS` header lines; :data:`STALL_SECONDS` for the client to take an answer; at most
:data:`MAX_CONNECTIONS` connections per process (:class:`CappedSite`). Watches have limits of
their own (``watch``); request bodies are bounded where they are read (``ofrep``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ferry.adapters.cache import CONFIG_EVENT, Cache, CacheUnavailable, Change
from ferry.adapters.kube_auth import KubeAuth
from ferry.adapters.postgres import StoreUnavailable
from ferry.adapters.postgres.latest import LatestReader
from ferry.api import configs, metrics, ofrep, watch
from ferry.api.guard import Guard, status_response
from ferry.domain.status import status_body

#: Largest request body (an OFREP evaluation context); larger ones get 413.
MAX_BODY_BYTES = 256 * 1024


#: Documents kept in memory between changes (see ``watch.Mirror``): configs and flag sets.
MIRROR_ENTRIES = 10_000

#: Configurations found in neither Redis nor PostgreSQL, remembered (briefly: ``configs``) so a
#: repeated read of a missing one is not a PostgreSQL query each time. A mirror of its own, so
#: names that do not exist cannot push documents that do out of ``MIRROR_ENTRIES``.
ABSENT_ENTRIES = 4096

#: Seconds a connection may go without a request in progress: between requests (keep-alive),
#: and (aiohttp starts the same timer when a connection opens, and it closes the connection if
#: the request's headers are not all there when it fires) the time a new connection has to send
#: its first request's line and headers. aiohttp's default is 3,630 s, during which a client
#: that sends nothing, or a header line now and then, held the connection. Clients that keep
#: connections open longer reconnect. Would be the setting ``serve.keepalive_seconds``.
KEEPALIVE_SECONDS = 10.0

#: Connections one server process holds at once (each watch holds one: ``watch`` allows 2,048);
#: past it, a new connection is answered 503 and closed before anything is read from it.
#: The default of the setting ``serve.max_connections``.
MAX_CONNECTIONS = 4096

#: Header lines a request may have (aiohttp's default is 128; each line at most 8,190 bytes):
#: about 512 KiB of headers per request at most, which a mesh's and a tracer's headers are far
#: from needing. More: 400.
MAX_HEADERS = 64

#: Seconds a connection may hold unsent bytes without ever emptying its buffer; then it is
#: dropped (:func:`_drop_stalled`). aiohttp waits for ever: a handler whose answer is larger
#: than the socket buffers never ends, and a connection closed with an answer still buffered is
#: never released (so it would count against ``MAX_CONNECTIONS`` for good). Would be
#: ``serve.write_timeout_seconds``.
STALL_SECONDS = 30.0


def _mirror_key(change: Change) -> tuple[Any, Any, Any]:
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
    max_watches: int = watch.WATCHES_PER_PROCESS
    max_watches_per_user: int = watch.WATCHES_PER_USER


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
    middlewares = [_measure, _errors]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    guard = Guard(parts.auth, parts.audience)
    hub = watch.ChangeHub(parts.cache)
    mirror = watch.Mirror(hub, _mirror_key, MIRROR_ENTRIES)
    absent = watch.Mirror(hub, _mirror_key, ABSENT_ENTRIES)
    readiness = _Readiness(parts)

    source = configs.ConfigSource(parts.cache, parts.reader, mirror, absent)
    configs.add_routes(app, guard, source)
    watch.add_routes(
        app,
        guard,
        hub,
        heartbeat_seconds=parts.heartbeat_seconds,
        max_seconds=parts.watch_max_seconds,
        limits=watch.WatchLimits(parts.max_watches_per_user, parts.max_watches),
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


class CappedSite(web.BaseSite):
    """A TCP site of at most ``max_connections`` connections at once. aiohttp has no such limit
    (``backlog`` bounds only connections not yet accepted); past it, a new connection is
    answered ``503`` and closed before anything is read from it, so that one client cannot hold
    every file descriptor and the memory that goes with them."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        reuse_port: bool = False,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._max = max_connections
        self._reuse_port = reuse_port
        self._bound = port
        self._stall_seconds = stall_seconds
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The port listened on (the one the kernel chose for port 0, once started)."""
        return self._bound

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        metrics.CONNECTIONS.set_function(lambda: len(server.connections))
        listening = await asyncio.get_running_loop().create_server(
            _capped(server, self._max),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
        )
        self._server = listening
        if listening.sockets:
            self._bound = int(listening.sockets[0].getsockname()[1])
        self._watchdog = asyncio.create_task(
            _drop_stalled(server, self._stall_seconds), name="ferry-serve-stalled"
        )

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        await super().stop()


async def _drop_stalled(server: web.Server, stall_seconds: float) -> None:
    """Drop every connection whose send buffer has not once been empty for ``stall_seconds``:
    its client takes nothing (or next to nothing) of what it was sent. Looked at four times per
    period, from outside the requests: bounding each answer's own writes instead (the transport's
    buffer limits at zero, a timeout around each send) cost ≈ 10 % of the GET throughput
    (`bench/read_api.py`, 2026-11-29). Abort, not close: a close waits for the buffer to drain,
    for ever if the client never reads."""
    loop = asyncio.get_running_loop()
    full_since: dict[int, float] = {}  # id(transport) → when its buffer was first seen non-empty
    while True:
        await asyncio.sleep(stall_seconds / 4)
        now, still = loop.time(), {}
        for connection in server.connections:
            transport = connection.transport
            if transport is None or not transport.get_write_buffer_size():
                continue
            since = full_since.get(id(transport), now)
            if now - since >= stall_seconds:
                metrics.ANSWERS_DROPPED.inc()
                transport.abort()
            else:
                still[id(transport)] = since
        full_since = still


def _capped(server: web.Server, limit: int) -> Callable[[], asyncio.BaseProtocol]:
    """``server``'s protocol factory, making a :class:`_TooMany` instead past ``limit``."""
    answer = _too_many_answer(limit)

    def protocol() -> asyncio.BaseProtocol:
        if len(server.connections) >= limit:
            metrics.CONNECTIONS_REFUSED.inc()
            return _TooMany(answer)
        return server()

    return protocol


def _too_many_answer(limit: int) -> bytes:
    message = (
        f"too many connections to this server process (it holds {limit} at most); retry, "
        "another replica may answer"
    )
    body = json.dumps(status_body(503, message)).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _TooMany(asyncio.Protocol):
    """A connection past the cap: the 503 and the end of the stream at once; the request is read
    and dropped until the client hangs up, for a second at most (closing with the request
    unread would reset the connection, and the client could lose the answer)."""

    LINGER_SECONDS = 1.0

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._answer)
        transport.write_eof()
        asyncio.get_running_loop().call_later(self.LINGER_SECONDS, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the request, unread

    def eof_received(self) -> bool:
        return False  # the client hung up: close


async def run(
    app: web.Application,
    host: str,
    port: int,
    *,
    ready: asyncio.Event,
    reuse_port: bool = False,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve until cancelled (SIGTERM), then finish what is in flight. ``reuse_port``: several
    processes listen on the port and the kernel spreads connections over them."""
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=5,
        keepalive_timeout=KEEPALIVE_SECONDS,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    try:
        await CappedSite(
            runner, host, port, reuse_port=reuse_port, max_connections=max_connections
        ).start()
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()
