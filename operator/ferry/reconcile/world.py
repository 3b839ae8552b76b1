"""The operator's view of the cluster: Kopf indexes, read through small typed helpers.

Kopf fills the indexes from its watches before any handler runs, so a reconcile never sees a
half-listed cluster (which would make it delete objects in namespaces it had not heard of yet).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import kopf

Key = tuple[str, str]  # (namespace, name)


def _one(index: Mapping[Any, Any], key: Any) -> Any:
    store = index.get(key)
    if not store:
        return None
    return next(iter(store))


class NamespaceSpecs(MutableMapping[str, Mapping[str, Any]]):
    """Specs of one kind in one namespace, read lazily from a Kopf index of snapshots.

    Resolving an entry touches only its bases, so looking names up one by one keeps a reconcile
    (or an admission request) independent of how many entries share the namespace. Writes and
    deletes stay local to this view: the admission webhook uses them to see "what would be".
    """

    def __init__(self, index: Mapping[Any, Any], namespace: str) -> None:
        self._index = index
        self._namespace = namespace
        self._local: dict[str, Mapping[str, Any]] = {}
        self._hidden: set[str] = set()

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        if name in self._local:
            return self._local[name]
        snapshot = None if name in self._hidden else _one(self._index, (self._namespace, name))
        if snapshot is None:
            raise KeyError(name)
        return snapshot["spec"]  # type: ignore[no-any-return]

    def __setitem__(self, name: str, spec: Mapping[str, Any]) -> None:
        self._local[name] = spec
        self._hidden.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._local.pop(name, None)
        self._hidden.add(name)

    def __iter__(self) -> Iterator[str]:
        stored = {
            n for (ns, n), store in list(self._index.items()) if ns == self._namespace and store
        }
        return iter(sorted((stored | set(self._local)) - self._hidden))

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class World:
    entries: kopf.Index[Key, dict[str, Any]]
    schemas: kopf.Index[Key, dict[str, Any]]
    flags: kopf.Index[Key, dict[str, Any]]
    namespaces: kopf.Index[str, tuple[dict[str, str], dict[str, str]]]
    configmaps: kopf.Index[str, dict[str, Any]]  # entry uid → materialised objects
    configmap_owners: kopf.Index[Key, str]  # every ConfigMap → its entry uid label, or ""
    # (namespace, reload-on entry name) → workloads; one index per kind (Deployment, ...)
    workloads: tuple[kopf.Index[Key, dict[str, Any]], ...]

    def entry(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _one(self.entries, (namespace, name))  # type: ignore[no-any-return]

    def schema(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _one(self.schemas, (namespace, name))  # type: ignore[no-any-return]

    def flag(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _one(self.flags, (namespace, name))  # type: ignore[no-any-return]

    def flag_keys(self) -> list[Key]:
        return list(self.flags.keys())

    def entry_specs(self, namespace: str) -> NamespaceSpecs:
        return NamespaceSpecs(self.entries, namespace)

    def schema_specs(self, namespace: str) -> NamespaceSpecs:
        return NamespaceSpecs(self.schemas, namespace)

    def all_namespaces(self) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
        for name, store in self.namespaces.items():
            for ns_labels, ns_annotations in store:
                yield name, ns_labels, ns_annotations

    def configmap_owner(self, namespace: str, name: str) -> str | None:
        """The entry uid a ConfigMap is labelled with ("" if none); ``None``: no such ConfigMap."""
        return _one(self.configmap_owners, (namespace, name))  # type: ignore[no-any-return]

    def materialised(self, uid: str) -> list[dict[str, Any]]:
        return list(self.configmaps.get(uid, []))

    def reload_targets(self, namespace: str, entry_name: str) -> list[dict[str, Any]]:
        return [w for index in self.workloads for w in index.get((namespace, entry_name), [])]

    def entry_keys(self) -> list[Key]:
        return list(self.entries.keys())
