"""Objects Ferry follows with its own informers rather than Kopf: the ConfigMaps and Secrets it
made (restored when someone edits or deletes them) and the workloads that ask to be rolled.

Kopf keeps a record of every object of a resource it watches, for as long as the object lives
(about 20 KiB per Deployment, measured by bench/memory.py), and receives every ConfigMap and
Secret of the cluster to filter them itself. Ferry's own ConfigMaps and Secrets are instead
filtered by the API server (Ferry's managed-by label); workloads can only be told apart by an
annotation, so every one is received but only those annotated ``ferry.dev/reload-on`` are kept
(docs/decisions/0023-cost-follows-ferrys-objects.md). Each event updates the indexes the
reconcilers read and queues what it affects; like the Kopf handlers, these never call the API.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Secret

from ferry.adapters.informer import Informer, ObjectKey
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.flagset import CONFIGMAP_NAME, parse_listing
from ferry.domain.hashing import content_hash
from ferry.reconcile.secrets import VaultSecrets
from ferry.reconcile.world import Key, Materialised, ObjectIndex, Workload
from ferry.runtime import Runtime

OURS = {L.MANAGED_BY: L.MANAGED_BY_FERRY}
KEPT = (L.ENTRY_NAMESPACE, L.ENTRY_NAME, L.REVISION, L.HASH, L.RENDERED_HASH)


WORKLOADS = (Deployment, StatefulSet, DaemonSet)


@dataclass
class FollowedIndexes:
    """What the informers keep: Ferry's ConfigMaps and Secrets (no Secret data: an HMAC) by
    entry uid, each namespace's ``ferry-flags`` listing, and the workloads to roll."""

    configmaps: ObjectIndex[str, Materialised] = field(default_factory=ObjectIndex)
    secrets: ObjectIndex[str, Materialised] = field(default_factory=ObjectIndex)
    # target namespace → {"flags": the listing annotation of its ferry-flags}
    flagsets: ObjectIndex[str, dict[str, Any]] = field(default_factory=ObjectIndex)
    # per kind: (namespace, reload-on value) → workloads
    workloads: tuple[ObjectIndex[Key, Workload], ...] = field(
        default_factory=lambda: tuple(ObjectIndex() for _ in WORKLOADS)
    )


def informers(
    client: AsyncClient,
    indexes: FollowedIndexes,
    runtime: Runtime,
    vault: VaultSecrets | None,
    *,
    server_timeout: int,
) -> list[Informer]:
    """The informers to run; Secrets only with a Vault (without one Ferry writes none)."""
    follow = Follow(indexes, runtime, vault)
    informer = functools.partial(Informer, client, server_timeout=server_timeout)
    found = [informer(ConfigMap, OURS, follow.configmap)]
    if vault is not None:
        found.append(informer(Secret, OURS, follow.secret))
    for resource, index in zip(WORKLOADS, indexes.workloads, strict=True):
        found.append(informer(resource, {}, follow.workload(resource.__name__, index)))
    return found


@dataclass
class Follow:
    indexes: FollowedIndexes
    runtime: Runtime
    vault: VaultSecrets | None

    def configmap(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        meta = obj.metadata if obj is not None else None
        labels, annotations = _labels(meta), _annotations(meta)
        if event == "DELETED" and self.indexes.flagsets.drop(key):
            self.runtime.enqueue(kinds.FLAG_SET, key[0])  # a ferry-flags gone: rebuilt
            return
        if key[1] == CONFIGMAP_NAME and labels.get(L.FLAGSET) == "true":
            self._flagset(key, obj, annotations)
            return
        data = dict(obj.data or {}) if obj is not None else {}
        index = self.indexes.configmaps
        self._materialised("ConfigMap", index, event, key, meta, content_hash(data))

    def secret(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        assert self.vault is not None  # only followed with a Vault
        encoded = (obj.data if obj is not None else None) or {}
        data = {k: base64.b64decode(v) for k, v in encoded.items()}
        digest = self.vault.digest(*key, data)
        meta = obj.metadata if obj is not None else None
        self._materialised("Secret", self.indexes.secrets, event, key, meta, digest)

    def _materialised(
        self,
        kind: str,
        index: ObjectIndex[str, Materialised],
        event: str,
        key: ObjectKey,
        meta: Any,
        data_hash: str,
    ) -> None:
        """Index it by its entry's uid; a delete or someone's edit queues the entry (restored)."""
        labels, annotations = _labels(meta), _annotations(meta)
        if event == "DELETED":
            before = index.drop(key)
            self.runtime.entries.forget(kind, *key)
            owners = {(m.entry_namespace, m.entry_name) for m in before.values()}
            owners.add((annotations.get(L.ENTRY_NAMESPACE, ""), annotations.get(L.ENTRY_NAME, "")))
            for namespace, name in owners:
                if namespace and name:
                    self.runtime.enqueue_entry(namespace, name)
            return
        uid = labels.get(L.ENTRY_UID)
        if not uid:
            index.drop(key)
            return
        found = Materialised(
            kind=kind,
            namespace=key[0],
            name=key[1],
            entry_namespace=str(annotations.get(L.ENTRY_NAMESPACE, "")),
            entry_name=str(annotations.get(L.ENTRY_NAME, "")),
            annotations={k: annotations[k] for k in KEPT if k in annotations},
            data_hash=data_hash,
            uid=str(meta.uid) if meta is not None and meta.uid else None,
        )
        index.put(key, {uid: found})
        edited = data_hash != annotations.get(L.RENDERED_HASH)
        if edited and found.entry_namespace and found.entry_name:
            self.runtime.enqueue_entry(found.entry_namespace, found.entry_name)

    def workload(
        self, kind: str, index: ObjectIndex[Key, Workload]
    ) -> Callable[[str, ObjectKey, Any | None], None]:
        def handle(event: str, key: ObjectKey, obj: Any | None) -> None:
            """Kept only while annotated ``ferry.dev/reload-on`` (``<namespace>/<name>``, or
            ``<name>`` of its own namespace); then its entry is reconciled, which rolls the
            workload if its hash is behind."""
            wanted = _annotations(obj.metadata if obj is not None else None).get(L.RELOAD_ON)
            if event == "DELETED" or not wanted:
                index.drop(key)
                return
            template = obj.spec.template if obj.spec is not None else None
            template_annotations = _annotations(template.metadata if template else None)
            current = template_annotations.get(L.CONFIG_HASH)
            index.put(key, {(key[0], wanted): Workload(kind, key[1], current)})
            source_ns, _, entry = wanted.rpartition("/")
            if entry:
                self.runtime.enqueue_entry(source_ns or key[0], entry)

        return handle

    def _flagset(self, key: ObjectKey, obj: Any, annotations: Mapping[str, str]) -> None:
        """A namespace's ``ferry-flags``: edited by someone else, it is rebuilt."""
        namespace = key[0]
        self.indexes.flagsets.put(key, {namespace: {"flags": parse_listing(annotations)}})
        if content_hash(dict(obj.data or {})) != annotations.get(L.RENDERED_HASH):
            self.runtime.enqueue(kinds.FLAG_SET, namespace)


def _labels(meta: Any) -> dict[str, str]:
    return dict(meta.labels or {}) if meta is not None else {}


def _annotations(meta: Any) -> dict[str, str]:
    return dict(meta.annotations or {}) if meta is not None else {}
