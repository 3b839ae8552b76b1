"""Ferry's own kinds and the namespaces, followed by Ferry's informers: each watch event updates
the index the reconcilers read, then becomes work-queue keys for what it affects.

Kopf used to watch these (its indexes and ``on.event`` handlers). Per event, Kopf's generic
machinery (its per-object worker, causes, index and handler bookkeeping) cost about 0.7 ms before
Ferry's handler ran, on the path of every apply; and its start-up with thousands of indexed objects
needed a fix to its private modules. An informer delivers the same events with none of that
(docs/decisions/0031-ferrys-kinds-from-its-own-informers.md).

Handlers only index and enqueue; they never call the API. Workers start only once every
informer's first list is in (``lifecycle._indexed``), so a reconcile never sees a half-listed
cluster.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Namespace

from ferry.adapters.informer import Informer, ObjectKey
from ferry.adapters.kube import KINDS
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.entry import references
from ferry.domain.frozen import freeze
from ferry.domain.targets import targets_elsewhere
from ferry.reconcile.workqueue import QueueKey
from ferry.reconcile.world import Key, ObjectIndex, Snapshot
from ferry.runtime import Runtime

ENTRY, SCHEMA, FLAG = kinds.CONFIG_ENTRY, kinds.CONFIG_SCHEMA, kinds.FEATURE_FLAG
NamespaceLabels = tuple[dict[str, str], dict[str, str]]  # (labels, annotations)


@dataclass
class OwnIndexes:
    """Ferry's objects by (namespace, name), as :class:`Snapshot` copies, and each namespace's
    labels and annotations: the indexes the reconcilers and the admission webhooks read."""

    entries: ObjectIndex[Key, Snapshot] = field(default_factory=ObjectIndex)
    schemas: ObjectIndex[Key, Snapshot] = field(default_factory=ObjectIndex)
    flags: ObjectIndex[Key, Snapshot] = field(default_factory=ObjectIndex)
    namespaces: ObjectIndex[str, NamespaceLabels] = field(default_factory=ObjectIndex)


def informers(
    client: AsyncClient, indexes: OwnIndexes, runtime: Runtime, *, server_timeout: int
) -> list[Informer]:
    """One informer per Ferry kind, and one for the namespaces (all of them, unfiltered)."""
    watch = Watches(indexes, runtime)
    informer = functools.partial(Informer, client, labels={}, server_timeout=server_timeout)
    return [
        informer(KINDS[ENTRY.kind], handle=watch.entry),
        informer(KINDS[SCHEMA.kind], handle=watch.schema),
        informer(KINDS[FLAG.kind], handle=watch.flag),
        informer(Namespace, handle=watch.namespace, namespace=None),  # cluster-scoped
    ]


def admission_informers(
    client: AsyncClient, indexes: OwnIndexes, *, server_timeout: int
) -> list[Informer]:
    """What the admission webhooks read (entries, schemas, namespaces), indexed and nothing
    more: for ``ferry webhooks``, which reconciles nothing (handlers/admission)."""
    index = Indexing(indexes)
    informer = functools.partial(Informer, client, labels={}, server_timeout=server_timeout)
    return [
        informer(KINDS[ENTRY.kind], handle=index.entry),
        informer(KINDS[SCHEMA.kind], handle=index.schema),
        informer(Namespace, handle=index.namespace, namespace=None),
    ]


def snapshot(body: Mapping[str, Any]) -> Snapshot:
    """Copies of just what the reconcilers need: memory stays small with thousands of objects,
    and nothing aliases the decoded watch event. The spec is frozen (``ferry.domain.frozen``),
    so what admission and reconciling derive from it (a schema's canonical text, ...) is kept
    on it (decision 0033)."""
    meta = body.get("metadata") or {}
    return Snapshot(
        uid=str(meta.get("uid")),
        generation=int(meta.get("generation", 0)),
        resource_version=str(meta.get("resourceVersion")),
        annotations=dict(meta.get("annotations") or {}),
        finalizers=tuple(meta.get("finalizers") or ()),
        deleting=meta.get("deletionTimestamp") is not None,
        spec=freeze(body.get("spec") or {}),  # what is remembered of it stays true
        status=copy.deepcopy(dict(body.get("status") or {})),
    )


def changed(
    runtime: Runtime, kind: str, event: str, key: ObjectKey, body: Mapping[str, Any]
) -> bool:
    """Whether this event may change what reconciling the object does.

    Every status patch and finalizer update Ferry makes comes back as a watch event; reconciling
    again for those would only find the work done (a plan, perhaps a PostgreSQL read) and, while
    the index lags, write the same status twice. Like controller-runtime's generation-changed
    predicate, only a new generation (spec), a deletion, a change of annotations (who changed
    it, why) or the object's first event count. The periodic resync covers the rest.
    """
    queue_key = QueueKey(kind, *key)
    if event == "DELETED":
        runtime.seen.pop(queue_key, None)
        return True
    meta = body.get("metadata") or {}
    signature = (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp") is not None,
        # A hash, not the items: kubectl's last-applied-configuration annotation holds the
        # whole object, and this is kept for every Ferry object.
        hash(tuple(sorted((meta.get("annotations") or {}).items()))),
    )
    if runtime.seen.get(queue_key) == signature:
        return False
    runtime.seen[queue_key] = signature
    return True


@dataclass
class Indexing:
    """Handlers that keep the indexes and do nothing else (what admission needs)."""

    indexes: OwnIndexes

    def _indexed(
        self, index: ObjectIndex[Key, Snapshot], event: str, key: ObjectKey, obj: Any | None
    ) -> Mapping[str, Any]:
        """Index the object (or drop it); returns its body ({} for one found gone by a list)."""
        body: Mapping[str, Any] = obj if obj is not None else {}
        if event == "DELETED":
            index.drop(key)
        else:
            index.put(key, {key: snapshot(body)})
        return body

    def entry(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        self._indexed(self.indexes.entries, event, key, obj)

    def schema(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        self._indexed(self.indexes.schemas, event, key, obj)

    def namespace(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        name = key[1]  # a namespace's key is ("None", name): it has no namespace of its own
        if event == "DELETED":
            self.indexes.namespaces.drop(key)
        else:
            meta = obj.metadata
            labels, annotations = dict(meta.labels or {}), dict(meta.annotations or {})
            self.indexes.namespaces.put(key, {name: (labels, annotations)})


@dataclass
class Watches(Indexing):
    """The informers' handlers. Each indexes the object first and queues keys after, so a
    reconcile that starts at once already reads the object's new state."""

    runtime: Runtime

    def entry(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        body = self._indexed(self.indexes.entries, event, key, obj)
        runtime = self.runtime
        if not changed(runtime, ENTRY.kind, event, key, body):
            return
        namespace, name = key
        spec = body.get("spec") or {}
        if targets_elsewhere(spec.get("target")) and event != "DELETED":
            runtime.targeting.add(key)
        else:
            runtime.targeting.discard(key)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        runtime.entries.saw_refresh(namespace, name, annotations.get(L.REFRESH))
        runtime.enqueue_entry(namespace, name)
        for user in runtime.entries.users_of(ENTRY.kind, namespace, name):
            runtime.enqueue_entry(namespace, user)
        # The schema it names now and the one it named before count their users again (usedBy).
        schema = references(spec)[0]
        before = runtime.schema_refs.pop(key, None)
        if schema is not None and event != "DELETED":
            runtime.schema_refs[key] = schema
        for counted in {schema, before} - {None}:
            runtime.enqueue(SCHEMA.kind, namespace, str(counted))

    def schema(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        body = self._indexed(self.indexes.schemas, event, key, obj)
        if not changed(self.runtime, SCHEMA.kind, event, key, body):
            return
        self.runtime.enqueue(SCHEMA.kind, *key)
        for user in self.runtime.entries.users_of(SCHEMA.kind, *key):
            self.runtime.enqueue_entry(key[0], user)

    def flag(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        body = self._indexed(self.indexes.flags, event, key, obj)
        if changed(self.runtime, FLAG.kind, event, key, body):
            self.runtime.enqueue(FLAG.kind, *key)

    def namespace(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        """A namespace appeared, changed labels or went: entries and flags that target it look
        again. When its ``ferry.dev/vault-paths`` annotation changed, so do the entries in it: a
        path the platform team took back must stop being read now, not at the next resync."""
        super().namespace(event, key, obj)
        name, runtime = key[1], self.runtime
        for namespace, flag in runtime.world.flag_keys():
            runtime.enqueue(FLAG.kind, namespace, flag)
        for namespace, entry in list(runtime.targeting):
            runtime.enqueue_entry(namespace, entry)
        if event == "DELETED":
            runtime.vault_paths.pop(name, None)
            return
        paths = (obj.metadata.annotations or {}).get(L.VAULT_PATHS)
        if name in runtime.vault_paths and runtime.vault_paths[name] != paths:
            for namespace, entry in runtime.world.entry_keys():
                if namespace == name:
                    runtime.enqueue_entry(namespace, entry)
        # First sight (start-up) queues nothing more: every entry is reconciled anyway.
        runtime.vault_paths[name] = paths
