"""The read API's limits without servers: the review caches, the review budget, the watch caps,
the connection cap, the command line and the standard-library client's defences.

The API server's review endpoints are stood in for by :class:`Reviews` (these tests are about
what Ferry caches and counts, not about Kubernetes); everything the read API does with the real
API server is in ``tests/integration/test_serve.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from ferry.adapters.kube_auth import Access, KubeAuth, TTLCache, Unauthenticated, User
from ferry.client import FerryClient, FerryError

VICTIM = User("system:serviceaccount:pay:api")
PROBER = User("system:serviceaccount:shop:web")


class Reviews:
    """Answers TokenReviews (every token refused) and SubjectAccessReviews (always allowed),
    counting them."""

    def __init__(self) -> None:
        self.token_reviews = 0
        self.access_reviews = 0

    async def create(self, review: Any) -> Any:
        if type(review).__name__ == "TokenReview":
            self.token_reviews += 1
            status = SimpleNamespace(
                authenticated=False, user=None, error="invalid bearer token", audiences=None
            )
            return SimpleNamespace(status=status)
        self.access_reviews += 1
        return SimpleNamespace(
            status=SimpleNamespace(allowed=True, reason="", evaluationError=None)
        )

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _auth(reviews: Reviews, **options: Any) -> KubeAuth:
    return KubeAuth(reviews, audience="ferry", ttl_seconds=60, **options)  # type: ignore[arg-type]


def _read(namespace: str, name: str) -> Access:
    return Access("get", "configentries", namespace, name)


# ----------------------------------------------------------------------------- token reviews
class _Request:
    """Stands for an aiohttp request with large headers, held by the handler's frame."""

    def __init__(self) -> None:
        self.headers = bytearray(256 * 1024)


async def test_a_refused_token_keeps_no_request_alive() -> None:
    """The refusal is cached (one TokenReview), but not as an exception object: raising one
    object again and again appended every caller's frames, and the requests they held, to its
    traceback."""
    reviews = Reviews()
    auth = _auth(reviews)
    requests: list[weakref.ref[_Request]] = []

    async def handle() -> None:
        request = _Request()
        requests.append(weakref.ref(request))
        with pytest.raises(Unauthenticated, match="the token was not accepted"):
            await auth.authenticate("garbage")

    for _ in range(40):
        await handle()
    gc.collect()
    assert sum(1 for ref in requests if ref() is not None) == 0
    assert reviews.token_reviews == 1  # still cached


async def test_a_token_that_is_not_printable_ascii_is_refused_without_a_review() -> None:
    reviews = Reviews()
    auth = _auth(reviews)
    # What aiohttp makes of the bytes ab\xff\xfe; a space; a control character; non-ASCII.
    for token in ("ab\udcff\udcfe", "two words", "tab\tinside", "jeton-é"):
        with pytest.raises(Unauthenticated, match="not printable ASCII"):
            await auth.authenticate(token)
    assert reviews.token_reviews == 0


# ----------------------------------------------------------------------------- the caches
async def _keep(value: str, seconds: float) -> tuple[str, float]:
    return value, seconds


async def test_expired_entries_are_dropped_when_others_are_added() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(100, clock)
    for i in range(10):
        await cache.get(("old", i), lambda: _keep("old", 1.0))
    clock.now += 5
    await cache.get("new", lambda: _keep("new", 1.0))
    assert len(cache) == 1  # the ten expired ones went, though nobody asked for them again


async def test_expired_entries_behind_a_live_one_are_dropped_too() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(100, clock)
    await cache.get("live", lambda: _keep("live", 1000.0))  # the oldest, and it stays
    for i in range(5):
        await cache.get(("short", i), lambda: _keep("short", 1.0))
    clock.now += 5
    for i in range(40):
        await cache.get(("new", i), lambda: _keep("new", 1000.0))
    assert len(cache) == 41


async def test_the_least_recently_used_entry_is_evicted_first() -> None:
    cache: TTLCache[str] = TTLCache(3, Clock())
    for key in ("a", "b", "c"):
        await cache.get(key, lambda key=key: _keep(key, 60))  # type: ignore[misc]
    _, cached = await cache.get("a", lambda: _keep("a", 60))
    assert cached
    await cache.get("d", lambda: _keep("d", 60))
    assert cache.peek("a") == "a" and cache.peek("b") is None


async def test_one_user_probing_many_names_does_not_evict_anothers_decisions() -> None:
    reviews = Reviews()
    auth = _auth(reviews, max_entries=100, max_entries_per_user=10)
    await auth.authorize(VICTIM, _read("pay", "db"))
    for i in range(1000):
        await auth.authorize(PROBER, _read("shop", f"random-{i}"))
    before = reviews.access_reviews
    decision, cached = await auth.authorize(VICTIM, _read("pay", "db"))
    assert decision.allowed and cached and reviews.access_reviews == before
    assert len(auth.decisions) == 11  # the prober holds its share, no more


async def test_a_user_past_its_review_budget_is_throttled_and_others_are_not() -> None:
    from ferry.adapters.kube_auth import ReviewBudget, TooManyReviews

    clock = Clock()
    reviews = Reviews()
    budget = ReviewBudget(per_second=1.0, burst=5, clock=clock)
    auth = _auth(reviews, clock=clock, review_budget=budget)
    for i in range(5):
        await auth.authorize(PROBER, _read("shop", f"n{i}"))
    with pytest.raises(TooManyReviews, match="system:serviceaccount:shop:web") as refused:
        await auth.authorize(PROBER, _read("shop", "n5"))
    assert refused.value.retry_after == pytest.approx(1.0)
    _, cached = await auth.authorize(PROBER, _read("shop", "n0"))  # a cached answer is free
    assert cached
    await auth.authorize(VICTIM, _read("pay", "db"))  # another user has a budget of its own
    clock.now += 1.0
    await auth.authorize(PROBER, _read("shop", "n5"))  # refilled
    assert reviews.access_reviews == 7


def test_the_budget_forgets_the_least_recent_users_beyond_its_bound() -> None:
    from ferry.adapters.kube_auth import ReviewBudget

    budget = ReviewBudget(per_second=1.0, burst=1, clock=Clock(), max_users=2)
    assert budget.take("a") is None and budget.take("a") is not None
    assert budget.take("b") is None and budget.take("c") is None
    assert len(budget) == 2  # "a" was forgotten: it starts afresh, bounded memory first


# ----------------------------------------------------------------------------- watch caps
def test_watches_are_capped_per_user_and_per_process() -> None:
    from ferry.api.watch import WatchLimits

    limits = WatchLimits(per_user=2, per_process=3)
    assert limits.admit("alice") is None and limits.admit("alice") is None
    refused = limits.admit("alice")
    assert refused is not None and "alice" in refused and "2 watches" in refused
    assert limits.admit("bob") is None
    refused = limits.admit("carol")
    assert refused is not None and "3 watches" in refused and "carol" not in refused
    limits.release("alice")
    assert limits.admit("carol") is None
    assert limits.open == 3


# ----------------------------------------------------------------------------- connections
async def _status_line(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_connections_past_the_cap_are_answered_503_and_closed() -> None:
    from ferry.api.server import CappedSite

    app = web.Application()

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = CappedSite(runner, "127.0.0.1", 0, max_connections=2)
    await site.start()
    held = []
    try:
        for _ in range(2):  # two keep-alive connections, each having been answered once
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"ok"), 5)).startswith(b"HTTP/1.1 200")
            held.append(writer)
        answer = await _status_line("127.0.0.1", site.port)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        held.pop().close()
        await asyncio.sleep(0.2)
        assert (await _status_line("127.0.0.1", site.port)).startswith(b"HTTP/1.1 200")
    finally:
        for writer in held:
            writer.close()
        await runner.cleanup()


async def test_an_answer_the_client_does_not_take_is_dropped() -> None:
    """Without a bound, aiohttp waited for ever for a client that does not read an answer larger
    than the socket buffers: the handler never ended and the connection was never released."""
    from ferry.api.server import CappedSite

    app = web.Application()

    async def large(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * (32 << 20))

    app.router.add_get("/", large)
    runner = web.AppRunner(app)
    await runner.setup()
    site = CappedSite(runner, "127.0.0.1", 0, stall_seconds=1)
    await site.start()
    assert runner.server is not None
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
    client.setblocking(False)
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("127.0.0.1", site.port))
        await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        await asyncio.sleep(0.5)
        while runner.server.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert runner.server.connections == []
    finally:
        client.close()
        await runner.cleanup()


# ----------------------------------------------------------------------------- command line
def test_an_empty_token_audience_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty audience used to switch the audience check off without a word."""
    import ferry.cli.serve as command

    started: list[Any] = []

    async def never_serve(settings: Any, **_: Any) -> None:
        started.append(settings)

    monkeypatch.setattr(command, "_serve", never_serve)
    env = {"FERRY_DATABASE_URL": "postgresql://nowhere/ferry", "FERRY_REDIS_URL": "redis://x:1"}
    for value in ("", "  "):
        result = CliRunner().invoke(command.serve, ["--serve-token-audience", value], env=env)
        assert result.exit_code == 2, result.output
        assert "--serve-token-audience" in result.output and "empty" in result.output
    assert started == []


# ----------------------------------------------------------------------------- the client
class _Server:
    """A plain HTTP server on its own thread; ``handle(handler)`` answers each GET."""

    def __init__(self, handle: Any = None) -> None:
        outer = self
        self.handle = handle
        self.seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append({"path": self.path, **dict(self.headers)})
                with contextlib.suppress(OSError):  # the client hung up: what some tests want
                    outer.handle(self)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[_Server]]:
    started: list[_Server] = []
    yield started
    for server in started:
        server.close()


DOCUMENT = (
    b'{"namespace":"shop","name":"api","revision":1,"hash":"h","format":"json",'
    b'"data":{},"rendered":{}}'
)


def _answer(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(DOCUMENT)))
    handler.end_headers()
    handler.wfile.write(DOCUMENT)


def _redirect(location: str) -> Any:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        if not handler.path.endswith("/moved"):
            return _answer(handler)
        handler.send_response(302)
        handler.send_header("Location", location + handler.path.removesuffix("/moved"))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return handle


def test_the_client_never_takes_its_token_to_another_origin(servers: list[_Server]) -> None:
    elsewhere = _Server(_answer)
    servers.append(elsewhere)
    ferry = _Server(_redirect(elsewhere.url))
    servers.append(ferry)
    client = FerryClient(ferry.url, namespace="shop", token="secret-token", timeout=5)
    with pytest.raises(FerryError, match="another origin") as refused:
        client.get("moved")
    assert refused.value.status == 302 and elsewhere.url in refused.value.message
    assert elsewhere.seen == []


def test_the_client_follows_a_redirect_on_its_own_origin(servers: list[_Server]) -> None:
    ferry = _Server()
    servers.append(ferry)
    ferry.handle = _redirect(ferry.url)
    client = FerryClient(ferry.url, namespace="shop", token="secret-token", timeout=5)
    assert client.get("moved").name == "api"
    assert [seen["Authorization"] for seen in ferry.seen] == ["Bearer secret-token"] * 2


def test_a_429_is_served_from_the_last_known_good_copy(
    servers: list[_Server], tmp_path: Path
) -> None:
    """A limit of the server's (429) is "retry later", like a 503: the app keeps its copy."""
    ferry = _Server(_answer)
    servers.append(ferry)
    client = FerryClient(ferry.url, namespace="shop", token="t", cache_dir=tmp_path, timeout=5)
    assert not client.get("api").stale

    def throttled(handler: BaseHTTPRequestHandler) -> None:
        body = b'{"kind":"Status","message":"too many access checks"}'
        handler.send_response(429)
        handler.send_header("Retry-After", "1")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    ferry.handle = throttled
    assert client.get("api").stale


def _hold(handler: BaseHTTPRequestHandler, seconds: float = 30) -> None:
    """Keep the connection open, sending nothing, until the client hangs up."""
    handler.connection.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not handler.connection.recv(1):
                return
        except TimeoutError:
            continue


def _stream_head(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()


def _endless_line(handler: BaseHTTPRequestHandler) -> None:
    _stream_head(handler)
    handler.wfile.write(b"data: " + b"x" * (4 << 20))  # 4 MiB and no line end yet
    handler.wfile.flush()
    _hold(handler)


def _endless_event(handler: BaseHTTPRequestHandler) -> None:
    _stream_head(handler)
    handler.wfile.write(b"data: x\n" * (512 << 10))  # 4 MiB of one event, not ended yet
    handler.wfile.flush()
    _hold(handler)


@pytest.mark.parametrize("send", [_endless_line, _endless_event])
def test_a_watch_stream_that_never_ends_a_line_or_event_is_dropped(
    servers: list[_Server], send: Any
) -> None:
    ferry = _Server(send)
    servers.append(ferry)
    client = FerryClient(ferry.url, namespace="shop", token="t", timeout=5)
    watch = client.watch(lambda *_: None, heartbeat_timeout=60)
    try:
        deadline = time.monotonic() + 10
        while len(ferry.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ferry.seen) >= 2, "the client kept reading the first stream"
    finally:
        watch.stop()
