"""Waiting for a foreign object to go: one small watch per name Ferry refuses to overwrite.

An entry whose ConfigMap or Secret name is taken by an object Ferry did not make is Stalled
(``Conflict``) until a person removes that object; then it should write at once, not at the
next resync. Watching every ConfigMap in the cluster to hear of that delete would make the
operator's cost follow the cluster's size (docs/decisions/0023-cost-follows-ferrys-objects.md),
so each blocked name gets its own informer (list, then watch), filtered by the API server to
that one name. Conflicts are rare and each is a human's problem, so there are few; past
``limit`` (kept under the HTTP client's 100 connections, on a client of their own) the entry is
looked at again on a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from lightkube import AsyncClient

from ferry.adapters.informer import Informer, ObjectKey
from ferry.adapters.kube import MATERIALISED
from ferry.reconcile.world import Key

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
        gone = asyncio.Event()

        def handle(event: str, _: ObjectKey, __: object) -> None:
            if event == "DELETED":
                gone.set()

        only = {"metadata.name": name}
        informer = Informer(
            self._client, MATERIALISED[kind], {}, handle, namespace=namespace, fields=only
        )
        following = asyncio.create_task(informer.run())
        try:
            await informer.synced.wait()
            if informer.count == 0:
                gone.set()  # gone already, before the first list
            await gone.wait()
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        owner = self._owners.pop(key, None)
        if owner is not None:
            self._on_gone(owner)

    async def close(self) -> None:
        for task in list(self._watches.values()):
            task.cancel()
        await asyncio.gather(*self._watches.values(), return_exceptions=True)
