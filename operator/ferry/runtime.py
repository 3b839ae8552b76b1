"""The running operator's parts, built once at start-up and shared with handlers via Kopf's memo."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from ferry import metrics
from ferry.adapters.cache import Cache
from ferry.adapters.kube import Kube
from ferry.adapters.postgres import Store
from ferry.domain import kinds
from ferry.reconcile.entries import EntryReconciler
from ferry.reconcile.flags import FlagReconciler
from ferry.reconcile.leases import Shards
from ferry.reconcile.reporting import hold_reports
from ferry.reconcile.schemas import SchemaReconciler
from ferry.reconcile.workqueue import QueueKey, WorkQueue
from ferry.reconcile.world import World
from ferry.settings import Settings

logger = logging.getLogger(__name__)


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
    # Every informer's first list is in (handlers/lifecycle): reconciling may start.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    webhooks_ready: asyncio.Event = field(default_factory=asyncio.Event)  # see ferry/webhooks
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # What each Ferry object's last watch event said about its spec, deletion and annotations:
    # events that change none of them (status and finalizer writes, mostly Ferry's own) queue
    # no reconcile. See handlers/watches.
    seen: dict[QueueKey, tuple[Any, ...]] = field(default_factory=dict)
    # (namespace, entry) → the ConfigSchema it names, so a schema's usedBy follows its entries.
    schema_refs: dict[tuple[str, str], str] = field(default_factory=dict)
    # (namespace, entry) of the entries that write into other namespaces (target.namespaces or
    # target.namespaceSelector): the only ones a namespace's labels concern. Kept so that a
    # namespace event (one per namespace at start-up) looks at them, not at every entry.
    targeting: set[tuple[str, str]] = field(default_factory=set)
    # namespace → its ferry.dev/vault-paths annotation as last seen (None: none), so that a
    # change of it re-queues the entries of that namespace and nothing else.
    vault_paths: dict[str, str | None] = field(default_factory=dict)
    # Which shards of the namespaces this replica reconciles now: all (one process), or those
    # whose Lease it holds (ferry.reconcile.leases).
    shards: Shards = field(default_factory=Shards)

    async def reconcile(self, key: QueueKey) -> None:
        metrics.QUEUE_DEPTH.set(len(self.queue))
        shard = self.shards.shard_of(key)
        if not self.shards.holds(shard):
            # Another replica's shard: dropped, not failed. Its holder reconciles the key (it
            # queued every key of the shard when it took the Lease, and sees the same events).
            return
        metrics.SHARD_LAST_RECONCILE.labels(str(shard)).set_to_current_time()
        await self.shards.while_held(shard, self._reconcile(key))

    async def _reconcile(self, key: QueueKey) -> None:
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

    def resync_keys(self) -> list[QueueKey]:
        """What the periodic resync looks at again: every ConfigEntry and FeatureFlag."""
        entry, flag = kinds.CONFIG_ENTRY.kind, kinds.FEATURE_FLAG.kind
        keys = [QueueKey(entry, ns, name) for ns, name in self.world.entry_keys()]
        return keys + [QueueKey(flag, ns, name) for ns, name in self.world.flag_keys()]

    def enqueue_held(self, key: QueueKey) -> None:
        """Queue ``key`` behind every change, if this replica reconciles its shard now (the
        periodic resync: a standby replica would only drop them)."""
        if self.shards.holds(self.shards.shard_of(key)):
            self.queue.add(key, later=True)

    def take_over(self, shard: int) -> None:
        """This replica now holds ``shard``: queue every key of it (level-triggered: whatever
        happened while nobody or another replica held it is found by looking at everything).

        What this process remembers about the shard's objects from an earlier hold is dropped
        first: another replica may have recorded newer revisions of them since, and the
        "content → revision seen committed" memory would otherwise answer with an older one
        (reverting to content recorded back then would skip its new revision).
        """
        keys = {key for key in self._every_key() if self.shards.shard_of(key) == shard}
        for key in keys:
            if key.kind == kinds.CONFIG_ENTRY.kind:
                snapshot, reporter = self.world.entry(key.namespace, key.name), self.entries.report
            elif key.kind == kinds.FEATURE_FLAG.kind:
                snapshot, reporter = self.world.flag(key.namespace, key.name), self.flags.report
            else:
                continue
            if snapshot is not None:
                reporter.forget(snapshot.uid)
        for key in keys:
            self.queue.add(key)
        logger.info("shard %s: %s key(s) queued", shard, len(keys))

    def _every_key(self) -> set[QueueKey]:
        """Every key the operator could have work for: Ferry objects in the indexes, entries that
        left leftovers behind (deleted while no replica held their shard), ``ferry-flags``
        ConfigMaps (a flag gone while no replica held the flags' shard)."""
        entry, schema = kinds.CONFIG_ENTRY.kind, kinds.CONFIG_SCHEMA.kind
        flag = kinds.FEATURE_FLAG.kind
        keys = {QueueKey(entry, ns, name) for ns, name in self.world.entry_keys()}
        keys |= {QueueKey(schema, ns, name) for ns, name in list(self.world.schemas.keys())}
        keys |= {QueueKey(flag, ns, name) for ns, name in self.world.flag_keys()}
        for store in [*self.world.configmaps.values(), *self.world.secrets.values()]:
            keys |= {QueueKey(entry, m.entry_namespace, m.entry_name) for m in list(store)}
        keys |= {QueueKey(kinds.FLAG_SET, ns, "") for ns in list(self.flags.flagsets.keys())}
        return keys
