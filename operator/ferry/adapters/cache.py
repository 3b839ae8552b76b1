"""The Redis cache of rendered configuration and served flags, and the change feed.

Redis is only a cache: losing it loses nothing, and Redis being down never blocks materialisation.
Callers catch ``CacheUnavailable``, report it, and write again later.

The change feed has two forms, written together by one script so they never disagree:

* the channel ``ferry:changes`` (fire and forget, for whoever listens right now);
* the stream ``ferry:changes:stream``, bounded with ``XADD … MAXLEN ~ N``, which ``ferry serve``
  tails for its ``/v1/watch`` Server-Sent Events: a client that reconnects with ``Last-Event-ID``
  is replayed what it missed, as long as the stream still holds it.

An event is written only when what is stored changes: the reconcilers write the same document on
every resync, and a watcher must not hear of a change that is not one. The stream has an *epoch*
(a random word stored next to it, set by the first write): Redis restarted empty gives a new
epoch, so a client holding an id of the old stream is told to re-read instead of being replayed
the new stream from an id that means nothing there.

With Redis Sentinel (``cache.sentinels``) the clients are redis-py's ``Sentinel.master_for``:
every new connection asks the sentinels which server is the primary. A connection that finds its
server gone, or a write (the script) that finds it demoted to a replica (``READONLY``), is dropped
and the command retried on a new connection, so writes land on the new primary. A read on a
connection still open to a demoted primary is answered by it, now a replica of the new one. The
stream and its epoch are replicated with the keys, so ``ferry serve``'s watchers carry on across
a failover; if the new primary's stream is behind what a watcher saw (writes lost with the old
primary), the position checks tell the watcher to re-read, as after any restart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from ferry.settings import CacheSettings

CHANGES_CHANNEL = "ferry:changes"
CHANGES_STREAM = "ferry:changes:stream"
STREAM_EPOCH = "ferry:changes:epoch"
#: Default bound of the stream (``XADD MAXLEN ~``): about this many changes are kept for replay.
STREAM_MAX_LENGTH = 10_000

#: Kinds of events: a ConfigEntry's rendered config, and a namespace's served flags.
CONFIG_EVENT = "ConfigEntry"
FLAGS_EVENT = "FeatureFlags"

# KEYS: document key, stream, epoch. ARGV: document ("" = delete), event JSON, max length,
# channel, a fresh epoch (used only if none is set). Returns the stream id, or false when the
# stored document did not change (nothing is published then).
_WRITE = """
local old = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if not old then return false end
  redis.call('DEL', KEYS[1])
else
  if old == ARGV[1] then return false end
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('SET', KEYS[3], ARGV[5], 'NX')
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return id
"""


class CacheUnavailable(Exception):
    pass


def config_key(namespace: str, name: str) -> str:
    return f"ferry:config:{namespace}:{name}"


def flags_key(namespace: str) -> str:
    """Every flag served in ``namespace``: the ferry-flags document, keyed by target namespace."""
    return f"ferry:flags:{namespace}"


StreamId = tuple[int, int]


def parse_stream_id(text: str) -> StreamId:
    """``"1700000000000-3"`` → ``(1700000000000, 3)``; ``ValueError`` for anything else."""
    ms, sep, seq = text.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream id: {text!r}")
    return int(ms), int(seq)


def format_stream_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


@dataclass(frozen=True)
class Change:
    """One entry of the change stream: its id and the event (``type``, ``kind``, ``namespace``,
    ``name`` for configs, ``revision`` and ``hash`` for updates)."""

    id: StreamId
    event: dict[str, Any]


@dataclass(frozen=True)
class StreamState:
    """What a reader needs to tell whether a position is still replayable.

    ``epoch`` is None before the first change was ever written. ``last`` is the newest id ever
    added; ``trimmed`` the newest id removed by ``MAXLEN`` (``(0, 0)``: none).
    """

    epoch: str | None
    last: StreamId
    trimmed: StreamId


def _change(entry: tuple[str, Mapping[str, str]]) -> Change:
    stream_id, fields = entry
    return Change(parse_stream_id(stream_id), json.loads(fields["event"]))


class Cache:
    def __init__(
        self,
        redis_url: str,
        *,
        timeout_seconds: float = 2.0,
        stream_max_length: int = STREAM_MAX_LENGTH,
        sentinels: Sequence[tuple[str, int]] = (),
        sentinel_master: str = "mymaster",
        sentinel_password: str | None = None,
    ) -> None:
        """``timeout_seconds`` bounds connecting and each command: past it Redis counts as down
        (``CacheUnavailable``) rather than holding up the reconcile that writes to it.
        ``stream_max_length``: about how many changes the stream keeps for replay.

        ``sentinels`` (host, port pairs): ask them for the primary named ``sentinel_master``
        (logging in to them with ``sentinel_password``); of ``redis_url`` only the scheme
        (``rediss://``: TLS, to the sentinels too), user, password and database are used."""
        self._url = redis_url
        self._timeout = timeout_seconds
        self._max_length = stream_max_length
        self._sentinel: Sentinel | None = None
        self._master = sentinel_master
        self._sentinel_addresses = [f"{host}:{port}" for host, port in sentinels]
        if sentinels:
            self._sentinel = _sentinel(redis_url, sentinels, sentinel_password, timeout_seconds)
        self._redis = self._client(socket_timeout=timeout_seconds)
        self._write = self._redis.register_script(_WRITE)
        self._blocking: aioredis.Redis | None = None

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> Cache:
        return cls(
            settings.url,
            timeout_seconds=settings.timeout_seconds,
            stream_max_length=settings.stream_max_length,
            sentinels=settings.sentinel_addresses,
            sentinel_master=settings.sentinel_master,
            sentinel_password=settings.sentinel_password,
        )

    def _client(self, *, socket_timeout: float) -> aioredis.Redis:
        """A client of the server (the current primary, with Sentinel) with its own pool."""
        timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": self._timeout}
        if self._sentinel is None:  # no retry: a failed command is CacheUnavailable at once
            return aioredis.Redis.from_url(self._url, decode_responses=True, **timeouts)
        # A lost connection is retried once, at once, on a new one, which asks the sentinels
        # for the primary again: what carries a write from a demoted primary (READONLY, which
        # redis-py turns into a lost connection) to the new one. A primary that is really gone
        # still fails fast, and a timeout is not retried: past ``timeout_seconds`` Redis counts
        # as down, as without Sentinel; the write is tried again later.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        return self._sentinel.master_for(self._master, retry=retry, **timeouts)

    def _unavailable(self, exc: BaseException) -> CacheUnavailable:
        if isinstance(exc, MasterNotFoundError) and self._sentinel is not None:
            # redis-py's message lists each sentinel's client at length; say it plainly.
            asked = ", ".join(self._sentinel_addresses)
            return CacheUnavailable(
                f"Redis Sentinel: none of the sentinels {asked} names a primary for"
                f" {self._master!r} (down or unreachable, a wrong sentinel password, or another"
                " master name)"
            )
        return CacheUnavailable(f"Redis: {exc}")

    async def close(self) -> None:
        await self._redis.aclose()
        if self._blocking is not None:
            await self._blocking.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def _publish(self, key: str, document: str, event: Mapping[str, Any]) -> str | None:
        try:
            result = await self._write(
                keys=[key, CHANGES_STREAM, STREAM_EPOCH],
                args=[
                    document,
                    json.dumps(event, ensure_ascii=False),
                    self._max_length,
                    CHANGES_CHANNEL,
                    uuid.uuid4().hex[:12],
                ],
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return str(result) if result else None

    # ------------------------------------------------------------------ rendered configuration
    async def put(
        self,
        namespace: str,
        name: str,
        *,
        revision: int,
        content_hash: str,
        data: Any,
        rendered: Mapping[str, str],
        format: str,
    ) -> None:
        """Store the rendered config and, if it changed, publish a change event: one round trip."""
        document = {
            "namespace": namespace,
            "name": name,
            "revision": revision,
            "hash": content_hash,
            "format": format,
            "data": data,
            "rendered": dict(rendered),
        }
        event = {
            "type": "updated",
            "kind": CONFIG_EVENT,
            "namespace": namespace,
            "name": name,
            "revision": revision,
            "hash": content_hash,
        }
        await self._publish(
            config_key(namespace, name),
            json.dumps(document, ensure_ascii=False, sort_keys=True),
            event,
        )

    async def delete(self, namespace: str, name: str) -> None:
        event = {"type": "deleted", "kind": CONFIG_EVENT, "namespace": namespace, "name": name}
        await self._publish(config_key(namespace, name), "", event)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        raw = await self.get_raw(namespace, name)
        return None if raw is None else dict(json.loads(raw))

    async def get_raw(self, namespace: str, name: str) -> str | None:
        """The stored JSON text as it is (a server can send it without re-encoding)."""
        try:
            raw = await self._redis.get(config_key(namespace, name))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return None if raw is None else str(raw)

    # ------------------------------------------------------------------ served flags
    async def put_flags(self, namespace: str, document: Mapping[str, Any]) -> None:
        """Store a namespace's flags.json document (and its sources) under ``ferry:flags:{ns}``,
        so readers that cannot mount the ConfigMap get the very same flag definitions; publish
        a change event when it changed."""
        text = json.dumps(document, ensure_ascii=False, sort_keys=True)
        event = {"type": "updated", "kind": FLAGS_EVENT, "namespace": namespace}
        await self._publish(flags_key(namespace), text, event)

    async def delete_flags(self, namespace: str) -> None:
        event = {"type": "deleted", "kind": FLAGS_EVENT, "namespace": namespace}
        await self._publish(flags_key(namespace), "", event)

    async def get_flags(self, namespace: str) -> dict[str, Any] | None:
        raw = await self.get_flags_raw(namespace)
        return None if raw is None else dict(json.loads(raw))

    async def get_flags_raw(self, namespace: str) -> str | None:
        try:
            raw = await self._redis.get(flags_key(namespace))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return None if raw is None else str(raw)

    # ------------------------------------------------------------------ the change stream
    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def stream_state(self) -> StreamState:
        """The stream's epoch, newest id and newest trimmed id (all zero before any change)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(STREAM_EPOCH)
                pipe.xinfo_stream(CHANGES_STREAM)
                epoch, info = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if isinstance(epoch, Exception):
            raise self._unavailable(epoch)
        if isinstance(info, ResponseError):  # no such key: nothing was ever written
            return StreamState(epoch, (0, 0), (0, 0))
        if isinstance(info, Exception):
            raise self._unavailable(info)
        return StreamState(
            epoch,
            parse_stream_id(str(info["last-generated-id"])),
            parse_stream_id(str(info.get("max-deleted-entry-id") or "0-0")),
        )

    async def changes_after(self, after: StreamId, count: int = 1000) -> list[Change]:
        """Up to ``count`` changes with an id greater than ``after``, oldest first."""
        try:
            entries = await self._redis.xrange(
                CHANGES_STREAM, min=f"({format_stream_id(after)}", count=count
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return [_change(entry) for entry in entries]

    async def wait_for_changes(
        self, after: StreamId, block_seconds: float, count: int = 1000
    ) -> list[Change]:
        """Changes after ``after``, waiting up to ``block_seconds`` for the first one (XREAD
        BLOCK, on a connection of its own whose socket timeout allows for the wait)."""
        if self._blocking is None:
            self._blocking = self._client(socket_timeout=block_seconds + self._timeout)
        try:
            answer = await self._blocking.xread(
                {CHANGES_STREAM: format_stream_id(after)},
                count=count,
                block=max(1, int(block_seconds * 1000)),
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        changes: list[Change] = []
        for _, entries in answer or []:
            changes.extend(_change(entry) for entry in entries)
        return changes


def _sentinel(
    url: str,
    sentinels: Sequence[tuple[str, int]],
    password: str | None,
    timeout_seconds: float,
) -> Sentinel:
    """redis-py's Sentinel for ``sentinels``, whose ``master_for`` clients connect with what
    ``url`` says besides the address: user, password, database, TLS and its options."""
    server = dict(parse_url(url))
    server.pop("host", None)
    server.pop("port", None)
    connection_class = server.pop("connection_class", None)
    if connection_class is not None and not issubclass(connection_class, SSLConnection):
        raise ValueError("a Redis URL used with sentinels must be redis:// or rediss://")
    tls = {key: value for key, value in server.items() if key.startswith("ssl_")}
    if connection_class is not None:  # rediss://: TLS to the servers and to the sentinels
        server["ssl"] = tls["ssl"] = True
    return Sentinel(
        list(sentinels),
        # Each sentinel is asked once per discovery: one that is down is skipped at once.
        sentinel_kwargs={
            "password": password,
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": True,
            **tls,
        },
        decode_responses=True,
        **server,
    )
