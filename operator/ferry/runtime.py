"""The running operator's parts, built once at start-up and shared with handlers via Kopf's memo."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ferry import metrics
from ferry.adapters.cache import Cache
from ferry.adapters.kube import Kube
from ferry.adapters.postgres import Store
from ferry.domain import kinds
from ferry.reconcile.entries import EntryReconciler
from ferry.reconcile.flags import FlagReconciler
from ferry.reconcile.reporting import hold_reports
from ferry.reconcile.schemas import SchemaReconciler
from ferry.reconcile.workqueue import QueueKey, WorkQueue
from ferry.reconcile.world import World
from ferry.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    world: World
    kube: Kube
    store: Store
    cache: Cache
    entries: EntryReconciler
    schemas: SchemaReconciler
    flags: FlagReconciler
    queue: WorkQueue[QueueKey] = field(default_factory=WorkQueue)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    webhooks_ready: asyncio.Event = field(default_factory=asyncio.Event)  # see ferry/webhooks
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # What each Ferry object's last watch event said about its spec, deletion and annotations:
    # events that change none of them (status and finalizer writes, mostly Ferry's own) queue
    # no reconcile. See handlers/watches.
    seen: dict[QueueKey, tuple[Any, ...]] = field(default_factory=dict)
    # (namespace, entry) → the ConfigSchema it names, so a schema's usedBy follows its entries.
    schema_refs: dict[tuple[str, str], str] = field(default_factory=dict)

    async def reconcile(self, key: QueueKey) -> None:
        metrics.QUEUE_DEPTH.set(len(self.queue))
        kind, namespace, name = key
        with hold_reports():  # Events and audit rows go out after the writes they describe
            if kind == kinds.CONFIG_ENTRY.kind:
                await self.entries.reconcile(namespace, name)
            elif kind == kinds.CONFIG_SCHEMA.kind:
                await self.schemas.reconcile(namespace, name)
            elif kind == kinds.FEATURE_FLAG.kind:
                await self.flags.reconcile(namespace, name)
            elif kind == kinds.FLAG_SET:
                await self.flags.reconcile_namespace(namespace)

    def enqueue(self, kind: str, namespace: str, name: str = "") -> None:
        self.queue.add(QueueKey(kind, namespace, name))

    def enqueue_entry(self, namespace: str, name: str) -> None:
        self.enqueue(kinds.CONFIG_ENTRY.kind, namespace, name)
