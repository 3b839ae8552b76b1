"""The operator's view of the cluster: Kopf indexes, read through small typed helpers.

Kopf fills the indexes from its watches before any handler runs, so a reconcile never sees a
half-listed cluster (which would make it delete objects in namespaces it had not heard of yet).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

Key = tuple[str, str]  # (namespace, name)


def _one(index: Mapping[Any, Any], key: Any) -> Any:
    store = index.get(key)
    if not store:
        return None
    return next(iter(store))


@dataclass
class World:
    entries: kopf.Index[Key, dict[str, Any]]
    schemas: kopf.Index[Key, dict[str, Any]]
    flags: kopf.Index[Key, dict[str, Any]]
    namespaces: kopf.Index[str, tuple[dict[str, str], dict[str, str]]]
    configmaps: kopf.Index[str, dict[str, Any]]  # entry uid → materialised objects
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

    def entry_specs(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {
            n: v["spec"]
            for (ns, n), store in self.entries.items()
            if ns == namespace
            for v in store
        }

    def schema_specs(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {
            n: v["spec"]
            for (ns, n), store in self.schemas.items()
            if ns == namespace
            for v in store
        }

    def all_namespaces(self) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
        for name, store in self.namespaces.items():
            for ns_labels, ns_annotations in store:
                yield name, ns_labels, ns_annotations

    def materialised(self, uid: str) -> list[dict[str, Any]]:
        return list(self.configmaps.get(uid, []))

    def reload_targets(self, namespace: str, entry_name: str) -> list[dict[str, Any]]:
        return [w for index in self.workloads for w in index.get((namespace, entry_name), [])]

    def entry_keys(self) -> list[Key]:
        return list(self.entries.keys())
