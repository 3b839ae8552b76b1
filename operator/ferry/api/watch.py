"""``GET /v1/watch?namespace=NS[&name=N]``: changes as Server-Sent Events, resumable.

One task per process tails the Redis change stream (``XREAD BLOCK``) and hands each change to the
open watches of its namespace, so a thousand clients cost one Redis connection, not a thousand.

A watch sends, in this order:

* ``event: ready`` with an ``id``: the position the watch starts from. A client that reconnects
  with that id in ``Last-Event-ID`` misses nothing, even if nothing changed in between.
* with ``Last-Event-ID``: every change after it that the bounded stream still holds, then live
  changes; if the stream no longer holds all of them (the client was away too long), or the id is
  from another stream (Redis restarted empty), ``event: reset`` instead: re-read what you watch.
* ``event: updated`` / ``event: deleted``, data ``{"kind": "ConfigEntry", "namespace", "name",
  "revision", "hash"}``, or ``{"kind": "FeatureFlags", "namespace"}`` when the flags served in
  the namespace changed (re-evaluate; without ``name`` and only for callers who may read flags).
* a comment line (``: heartbeat``) every ``heartbeat`` seconds, so proxies keep the stream open
  and clients can tell a dead connection from a quiet one.

Ids are ``<epoch>.<ms>-<seq>``: the stream's epoch (see ``adapters/cache``) and the Redis stream
id. A client too slow to take its events (its queue full) is sent ``reset`` and continues live.
A watch ends after about ``max_seconds`` (randomised, as kube-apiserver ends watches), so the
client reconnects and its token and access are checked again.

Limits (a watch holds a connection, a task and a queue for up to an hour): at most
:data:`WATCHES_PER_USER` open watches per user and :data:`WATCHES_PER_PROCESS` in all, per
server process (``429`` past either); every write waits at most :data:`WRITE_STALL_SECONDS` for
the client to take what was sent before, and never past the watch's end, or the connection is
dropped; a resume replays at most :data:`MAX_REPLAY` changes of the stream (``reset`` past it).

Whom it trusts: the caller's token, and RBAC ``get`` on ``configentries`` (naming ``name`` when
given) in the namespace; flag events only with ``get`` on ``featureflags`` there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ferry.adapters.cache import (
    CONFIG_EVENT,
    FLAGS_EVENT,
    Cache,
    CacheUnavailable,
    Change,
    StreamId,
    StreamState,
    format_stream_id,
    parse_stream_id,
)
from ferry.adapters.kube_auth import Access
from ferry.api import metrics
from ferry.api.guard import Guard, Refused, forbidden, status_response
from ferry.domain import kinds

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1024
NO_EPOCH = "0"

#: Open watches one user may have in one server process; past it, 429. An app's replicas share
#: their service account, hence room for many (bench/sse_watch.py connects 1,000 as one user),
#: yet one user cannot take every watch the process allows. The default of the setting
#: ``serve.max_watches_per_user``.
WATCHES_PER_USER = 1024
#: Open watches in one server process, all users together; past it, 429 (another replica may
#: take it). The default of the setting ``serve.max_watches``.
WATCHES_PER_PROCESS = 2048
#: Seconds one write may wait for the client to take what was sent before (a write waits only
#: once the socket's buffers are full); past it the client has stopped reading, and the
#: connection is dropped with what it did not take. Would be ``serve.watch_write_timeout_seconds``.
WRITE_STALL_SECONDS = 10.0
#: Changes of the stream (all namespaces) a resuming watch is replayed at most; past it the
#: client is sent ``reset`` and re-reads, as when the stream no longer holds its id. Each
#: reconnect then reads at most this many entries, not the whole stream (10,000 by default).
MAX_REPLAY = 1000


class _Reset:
    """Queued to a watch when it must re-read: the hub lost its place, or the watch fell behind."""


RESET = _Reset()


# ----------------------------------------------------------------------------- positions
def event_id(epoch: str | None, stream_id: StreamId) -> str:
    return f"{epoch or NO_EPOCH}.{format_stream_id(stream_id)}"


def parse_event_id(text: str) -> tuple[str, StreamId]:
    """``"<epoch>.<ms>-<seq>"`` → (epoch, stream id); ``ValueError`` otherwise."""
    epoch, sep, rest = text.strip().partition(".")
    if not sep or not epoch:
        raise ValueError(f"not a Ferry event id: {text!r}")
    return epoch, parse_stream_id(rest)


def resume_from(last_event_id: str, state: StreamState) -> StreamId | None:
    """Where to replay from for a client that saw ``last_event_id``; None: it must re-read.

    Replaying is right only when the stream still holds every change after that id: same epoch
    (or the client saw none, and nothing was trimmed), an id not beyond the newest, and nothing
    trimmed past it.
    """
    try:
        epoch, position = parse_event_id(last_event_id)
    except ValueError:
        return None
    # NO_EPOCH: the client started before the first change was ever written.
    same_stream = epoch in (NO_EPOCH, state.epoch)
    if not same_stream or position > state.last or state.trimmed > position:
        return None
    return position


# ----------------------------------------------------------------------------- limits
class WatchLimits:
    """How many watches are open, per user and in all, and whether one more may open."""

    def __init__(
        self, per_user: int = WATCHES_PER_USER, per_process: int = WATCHES_PER_PROCESS
    ) -> None:
        self.per_user = per_user
        self.per_process = per_process
        self.open = 0
        self._by_user: dict[str, int] = {}

    def admit(self, user: str) -> str | None:
        """None, and one more watch of ``user`` is counted (until :meth:`release`); or why it
        may not open."""
        if self.open >= self.per_process:
            metrics.WATCHES_REFUSED.labels("process").inc()
            return (
                f"this server has {self.per_process} watches open, as many as it takes; "
                "retry later (another replica may take it)"
            )
        held = self._by_user.get(user, 0)
        if held >= self.per_user:
            metrics.WATCHES_REFUSED.labels("user").inc()
            return (
                f"{user} has {self.per_user} watches open on this server, as many as one user "
                "may have; close one, or retry later"
            )
        self._by_user[user] = held + 1
        self.open += 1
        return None

    def release(self, user: str) -> None:
        held = self._by_user.pop(user, 0) - 1
        if held > 0:
            self._by_user[user] = held
        self.open -= 1


# ----------------------------------------------------------------------------- the hub
@dataclass(eq=False)
class Watcher:
    namespace: str
    name: str | None
    configs: bool  # may see ConfigEntry events
    flags: bool  # may see FeatureFlags events
    queue: asyncio.Queue[Change | _Reset] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def wants(self, event: dict[str, Any]) -> bool:
        kind = event.get("kind", CONFIG_EVENT)
        if kind == FLAGS_EVENT:
            return self.flags and self.name is None
        return self.configs and (self.name is None or event.get("name") == self.name)

    def offer(self, item: Change | _Reset) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # too slow: drop what is queued, tell it to re-read
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESET)


class ChangeHub:
    """Tails the change stream and fans it out to the watches of this process."""

    def __init__(self, cache: Cache, *, block_seconds: float = 5.0) -> None:
        self.cache = cache
        self.block_seconds = block_seconds
        self.epoch: str | None = None
        self.position: StreamId | None = None  # None until the stream was first read
        # ``live``: tailing, in step with the stream, so every change reaches the listeners
        # within the stream's delay. ``generation`` moves with every change and every loss of
        # step: a value read from Redis may be kept only if it did not move during the read.
        self.live = False
        self.generation = 0
        self.listeners: list[Callable[[Change | None], None]] = []  # None: forget everything
        self._watchers: dict[str, set[Watcher]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ferry-change-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, watcher: Watcher) -> None:
        self._watchers.setdefault(watcher.namespace, set()).add(watcher)
        metrics.WATCHERS.inc()

    def unsubscribe(self, watcher: Watcher) -> None:
        group = self._watchers.get(watcher.namespace)
        if group is not None and watcher in group:
            group.discard(watcher)
            metrics.WATCHERS.dec()
            if not group:
                del self._watchers[watcher.namespace]

    def _all(self) -> Iterable[Watcher]:
        for group in self._watchers.values():
            yield from group

    def _lost(self) -> None:
        self.live = False
        self.generation += 1
        for listener in self.listeners:
            listener(None)

    def _dispatch(self, change: Change) -> None:
        self.generation += 1
        for listener in self.listeners:
            listener(change)
        for watcher in self._watchers.get(str(change.event.get("namespace")), ()):
            if watcher.wants(change.event):
                watcher.offer(change)

    def _reset_all(self) -> None:
        self._lost()
        for watcher in self._all():
            watcher.offer(RESET)

    async def _sync(self) -> None:
        """Check our place against the stream; tell every watch to re-read if it is lost."""
        state = await self.cache.stream_state()
        if (
            self.position is not None
            and resume_from(event_id(self.epoch, self.position), state) is None
        ):
            logger.warning("change stream restarted or trimmed past our position: reset sent")
            self._reset_all()
            self.position = None
        self.epoch = state.epoch
        if self.position is None:
            self.position = state.last

    async def _run(self) -> None:
        delay = 0.2
        synced = False
        while True:
            try:
                if not synced:
                    await self._sync()
                    synced = True
                    if not self.live:
                        self.generation += 1
                        self.live = True
                    metrics.STREAM_UP.set(1)
                assert self.position is not None
                changes = await self.cache.wait_for_changes(self.position, self.block_seconds)
                if not changes or self.epoch is None:
                    synced = False  # quiet (or first change ever): check the epoch next round
                for change in changes:
                    self._dispatch(change)
                    self.position = change.id
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except CacheUnavailable as exc:
                self._lost()
                metrics.STREAM_UP.set(0)
                if synced:
                    logger.warning("change stream unavailable: %s", exc)
                synced = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # never let the hub die: watches would go silent
                logger.exception("change stream: unexpected error")
                self._lost()
                synced = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class Mirror:
    """What was read from Redis, kept in memory while the hub is live, dropped on each change.

    Saves the Redis round trip of every read (most of a read's cost) without serving anything
    older than the change feed: a key is forgotten when its change event arrives (the same
    moment watchers hear of it), and everything is forgotten and bypassed while the hub is not
    in step with the stream (Redis down, restarted, trimmed past us).
    """

    def __init__(self, hub: ChangeHub, key_of: Callable[[Change], Hashable], max_entries: int):
        self.hub = hub
        self._key_of = key_of
        self._max = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        hub.listeners.append(self._changed)

    def _changed(self, change: Change | None) -> None:
        if change is None:
            self._entries.clear()
        else:
            self._entries.pop(self._key_of(change), None)

    def get(self, key: Hashable) -> Any:
        return self._entries.get(key) if self.hub.live else None

    def put(self, key: Hashable, value: Any, generation: int) -> None:
        """Keep ``value``, read from Redis when the hub was at ``generation``, unless anything
        changed since (then it may be stale: the next read asks Redis again)."""
        if self.hub.live and generation == self.hub.generation:
            self._entries[key] = value
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)


# ----------------------------------------------------------------------------- the route
def _sse(event: str, data: Any, event_id_: str | None = None) -> bytes:
    lines = []
    if event_id_ is not None:
        lines.append(f"id: {event_id_}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def _public(event: dict[str, Any]) -> dict[str, Any]:
    keep = ("kind", "namespace", "name", "revision", "hash")
    return {k: event[k] for k in keep if k in event}


class _Gone(Exception):
    """The client stopped taking what the watch sends: the connection was dropped."""


def hang_up(request: web.Request) -> None:
    """Drop the connection at once, with whatever is still buffered for it. (``close`` would
    first wait for the buffer to drain, for ever if the client does not read.)"""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _within(request: web.Request, write: Awaitable[Any], deadline: float) -> None:
    """``write``, given :data:`WRITE_STALL_SECONDS` and never past ``deadline`` (loop time);
    :class:`_Gone` once the connection was dropped for taking longer."""
    left = deadline - asyncio.get_running_loop().time()
    try:
        # asyncio.timeout, not wait_for: no task per write; and a write that needs no waiting
        # is done even when no time is left.
        async with asyncio.timeout(max(0.0, min(WRITE_STALL_SECONDS, left))):
            await write
    except TimeoutError:
        metrics.WATCHES_DROPPED.inc()
        hang_up(request)
        raise _Gone from None


async def _finish(request: web.Request, response: web.StreamResponse, deadline: float) -> None:
    """End the stream; drop the connection if the client has not taken all of it (so closing
    does not wait on it)."""
    await _within(request, response.write_eof(), deadline)
    transport = request.transport
    if transport is not None and transport.get_write_buffer_size():
        hang_up(request)


@dataclass
class _Feed:
    """What one watch sends until ``deadline`` (loop time), each write bounded (``_within``)."""

    hub: ChangeHub
    request: web.Request
    response: web.StreamResponse
    watcher: Watcher
    deadline: float

    async def write(self, data: bytes) -> None:
        await _within(self.request, self.response.write(data), self.deadline)

    async def opening(self, replay: list[Change], start: StreamId, reset: bool) -> None:
        """The reconnection delay, ``reset`` or what was missed, then ``ready`` at ``start``."""
        epoch, namespace = self.hub.epoch, self.watcher.namespace
        await self.write(b"retry: 1000\n\n")
        if reset:
            await self.write(_sse("reset", {"namespace": namespace}))
        for change in replay:
            await self.write(
                _sse(change.event["type"], _public(change.event), event_id(epoch, change.id))
            )
        await self.write(_sse("ready", {"namespace": namespace}, event_id(epoch, start)))

    async def live(self, sent: StreamId, heartbeat: float) -> None:
        """Changes as they come (those after ``sent``), and heartbeats, until the deadline."""
        loop = asyncio.get_running_loop()
        hub, namespace = self.hub, self.watcher.namespace
        while (left := self.deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(self.watcher.queue.get(), min(heartbeat, left))
            except TimeoutError:
                if self.deadline > loop.time():
                    await self.write(b": heartbeat\n\n")
                continue
            if isinstance(item, _Reset):
                # Whatever comes after is new: the client re-reads everything before it.
                sent = (0, 0)
                at = None if hub.position is None else event_id(hub.epoch, hub.position)
                await self.write(_sse("reset", {"namespace": namespace}, at))
                continue
            if item.id <= sent:
                continue  # already replayed
            sent = item.id
            event = item.event
            await self.write(_sse(event["type"], _public(event), event_id(hub.epoch, item.id)))


def add_routes(
    app: web.Application,
    guard: Guard,
    hub: ChangeHub,
    *,
    heartbeat_seconds: float,
    max_seconds: float = 1800.0,
    limits: WatchLimits | None = None,
) -> None:
    limits = limits or WatchLimits()

    async def watch(request: web.Request) -> web.StreamResponse:
        namespace = request.query.get("namespace", "")
        name = request.query.get("name") or None
        if not namespace:
            return status_response(400, "query parameter 'namespace' is required")
        try:
            user = await guard.user(request)
            access = Access("get", kinds.CONFIG_ENTRY.plural, namespace, name)
            configs = await guard.allowed(user, access)
            flag_access = Access("get", kinds.FEATURE_FLAG.plural, namespace)
            flags = name is None and await guard.allowed(user, flag_access)
        except Refused as refused:
            return refused.response
        if not configs and not flags:
            return forbidden(user, access)
        if hub.position is None:
            return status_response(503, "the change stream is unavailable (Redis)")
        refusal = limits.admit(user.username)
        if refusal is not None:
            return status_response(429, refusal, retry_after=5)
        watcher = Watcher(namespace, name, configs, flags)
        hub.subscribe(watcher)
        try:
            return await _stream(request, watcher, heartbeat_seconds, max_seconds)
        finally:
            hub.unsubscribe(watcher)
            limits.release(user.username)

    async def _stream(
        request: web.Request, watcher: Watcher, heartbeat: float, max_seconds: float
    ) -> web.StreamResponse:
        start: StreamId = hub.position or (0, 0)  # read right after subscribing: no gap
        replay: list[Change] = []
        reset = False
        last_seen = request.headers.get("Last-Event-ID")
        if last_seen:
            try:
                state = await hub.cache.stream_state()
                position = resume_from(last_seen, state)
                found = None if position is None else await _replay(watcher, position)
                if found is None:
                    reset = True
                else:
                    replay, start = found
            except CacheUnavailable:
                return status_response(503, "the change stream is unavailable (Redis)")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
            }
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds * (1 + random.random())
        feed = _Feed(hub, request, response, watcher, deadline)
        try:
            await _within(request, response.prepare(request), deadline)
            await feed.opening(replay, start, reset)
            await feed.live(start, heartbeat)
            await _finish(request, response, loop.time() + WRITE_STALL_SECONDS)
        except (_Gone, ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def _replay(watcher: Watcher, position: StreamId) -> tuple[list[Change], StreamId] | None:
        """Every change after ``position`` this watch wants, and the id it got to; None when
        more than :data:`MAX_REPLAY` changes (of all namespaces) came after it: the client
        re-reads instead, so a reconnect costs one bounded read of the stream."""
        page = await hub.cache.changes_after(position, MAX_REPLAY + 1)
        if len(page) > MAX_REPLAY:
            return None
        found = [
            c
            for c in page
            if c.event.get("namespace") == watcher.namespace and watcher.wants(c.event)
        ]
        return found, (page[-1].id if page else position)

    app.router.add_get("/v1/watch", watch)
