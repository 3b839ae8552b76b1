"""Waiting for a foreign object to go: one small watch per name Ferry refuses to overwrite.

An entry whose ConfigMap or Secret name is taken by an object Ferry did not make is Stalled
(``Conflict``) until a person removes that object; then it should write at once, not at the
next resync. Watching every ConfigMap in the cluster to hear of that delete would make the
operator's cost follow the cluster's size (docs/decisions/0023-cost-follows-ferrys-objects.md),
so each blocked name gets its own watch, filtered by the API server to that one name. Conflicts
are rare and each is a human's problem, so there are few; past ``limit`` (kept under the HTTP
client's 100 connections, on a client of their own) the entry is looked at again on a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx2 as httpx
from lightkube import ApiError, AsyncClient

from ferry.adapters.kube import MATERIALISED
from ferry.reconcile.world import Key

logger = logging.getLogger(__name__)

Blocked = tuple[str, str, str]  # (kind, namespace, name) of the foreign object


class GoneWatches:
    """Tell ``on_gone(owner)`` when the foreign object blocking ``owner`` is deleted."""

    def __init__(
        self, client: AsyncClient, on_gone: Callable[[Key], None], *, limit: int = 64
    ) -> None:
        self._client = client
        self._on_gone = on_gone
        self._limit = limit
        self._watches: dict[Blocked, asyncio.Task[None]] = {}
        self._owners: dict[Blocked, Key] = {}

    def watch(self, kind: str, namespace: str, name: str, owner: Key) -> bool:
        """Start (or keep) watching; False when at the limit (the caller retries on a timer)."""
        key = (kind, namespace, name)
        self._owners[key] = owner
        if key in self._watches:
            return True
        if len(self._watches) >= self._limit:
            self._owners.pop(key, None)
            return False
        task = asyncio.create_task(self._wait(key), name=f"ferry-gone-{kind}-{namespace}-{name}")
        self._watches[key] = task
        task.add_done_callback(lambda _: self._watches.pop(key, None))
        return True

    async def _wait(self, key: Blocked) -> None:
        kind, namespace, name = key
        resource = MATERIALISED[kind]
        only = {"metadata.name": name}
        failures = 0
        while True:
            try:
                listing = self._client.list(resource, namespace=namespace, fields=only)
                if not [obj async for obj in listing]:
                    break  # already gone
                stream = self._client.watch(
                    resource,
                    namespace=namespace,
                    fields=only,
                    resource_version=listing.resourceVersion,
                )
                async for event, _ in stream:
                    if event == "DELETED":
                        break
                else:
                    continue
                break
            except (ApiError, httpx.HTTPError) as exc:
                failures += 1
                logger.debug("watching %s %s/%s: %s", kind, namespace, name, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
        owner = self._owners.pop(key, None)
        if owner is not None:
            self._on_gone(owner)

    async def close(self) -> None:
        for task in list(self._watches.values()):
            task.cancel()
        await asyncio.gather(*self._watches.values(), return_exceptions=True)
