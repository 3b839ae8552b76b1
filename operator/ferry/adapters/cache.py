"""The Redis cache of rendered configuration and the change feed.

Redis is only a cache: losing it loses nothing, and Redis being down never blocks materialisation.
Callers catch ``CacheUnavailable``, report it, and write again later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

CHANGES_CHANNEL = "ferry:changes"


class CacheUnavailable(Exception):
    pass


def config_key(namespace: str, name: str) -> str:
    return f"ferry:config:{namespace}:{name}"


def flags_key(namespace: str) -> str:
    """Every flag served in ``namespace``: the ferry-flags document, keyed by target namespace."""
    return f"ferry:flags:{namespace}"


class Cache:
    def __init__(self, redis_url: str, *, timeout_seconds: float = 2.0) -> None:
        """``timeout_seconds`` bounds connecting and each command: past it Redis counts as down
        (``CacheUnavailable``) rather than holding up the reconcile that writes to it."""
        self._redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            decode_responses=True,
        )

    async def close(self) -> None:
        await self._redis.aclose()

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
        """Store the rendered config and publish a change event, in one round trip."""
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
            "namespace": namespace,
            "name": name,
            "revision": revision,
            "hash": content_hash,
        }
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(config_key(namespace, name), json.dumps(document, ensure_ascii=False))
                pipe.publish(CHANGES_CHANNEL, json.dumps(event))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {exc}") from exc

    async def delete(self, namespace: str, name: str) -> None:
        event = {"type": "deleted", "namespace": namespace, "name": name}
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(config_key(namespace, name))
                pipe.publish(CHANGES_CHANNEL, json.dumps(event))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {exc}") from exc

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(config_key(namespace, name))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {exc}") from exc
        return None if raw is None else dict(json.loads(raw))

    async def put_flags(self, namespace: str, document: Mapping[str, Any]) -> None:
        """Store a namespace's flags.json document (and its sources) under ``ferry:flags:{ns}``,
        so readers that cannot mount the ConfigMap get the very same flag definitions."""
        try:
            await self._redis.set(flags_key(namespace), json.dumps(document, ensure_ascii=False))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {exc}") from exc

    async def delete_flags(self, namespace: str) -> None:
        try:
            await self._redis.delete(flags_key(namespace))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {exc}") from exc

    async def get_flags(self, namespace: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(flags_key(namespace))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {exc}") from exc
        return None if raw is None else dict(json.loads(raw))
