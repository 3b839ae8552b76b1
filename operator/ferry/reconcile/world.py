"""The operator's view of the cluster: indexes, read through small typed helpers.

Every index is an :class:`ObjectIndex` filled by Ferry's informers: its custom objects and the
namespaces by ``ferry.handlers.watches``, the ConfigMaps and Secrets it made and the workloads it
rolls by ``ferry.handlers.followed``. All are complete before any reconcile runs, so a
reconcile never sees a half-listed cluster (which would make it delete objects in namespaces it
had not heard of yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Key = tuple[str, str]  # (namespace, name)
K = TypeVar("K")
V = TypeVar("V")


class ObjectIndex(Mapping[K, list[V]], Generic[K, V]):
    """An index in Kopf's shape (``kopf.Index``), filled by the informers' handlers: each object
    (by namespace and name) contributes values under keys; reading a key gives every value
    contributed under it (``index.get(key, [])``, ``.values()``).
    """

    def __init__(self) -> None:
        self._by_key: dict[K, dict[Key, V]] = {}
        self._of: dict[Key, dict[K, V]] = {}

    def put(self, obj: Key, contributions: Mapping[K, V]) -> dict[K, V]:
        """Replace what ``obj`` contributes; returns what it contributed before.

        New values are written over the old ones before keys it no longer contributes under are
        taken back: the admission webhooks read these indexes from their own thread, and an
        object being updated must never look absent to them, even between two bytecodes.
        """
        contributions = dict(contributions)
        before = self._of.pop(obj, {})
        for key, value in contributions.items():
            self._by_key.setdefault(key, {})[obj] = value
        if contributions:
            self._of[obj] = contributions
        self._take_back(obj, before.keys() - contributions.keys())
        return before

    def drop(self, obj: Key) -> dict[K, V]:
        """``obj`` is gone; returns what it contributed."""
        before = self._of.pop(obj, {})
        self._take_back(obj, before)
        return before

    def _take_back(self, obj: Key, keys: Iterable[K]) -> None:
        for key in keys:
            values = self._by_key.get(key, {})
            values.pop(obj, None)
            if not values:
                self._by_key.pop(key, None)

    def __getitem__(self, key: K) -> list[V]:
        return list(self._by_key[key].values())

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._by_key))

    def __len__(self) -> int:
        return len(self._by_key)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the operator keeps of one Ferry object (ConfigEntry, ConfigSchema, FeatureFlag).

    Copies made by ``ferry.handlers.watches.snapshot``, never the decoded watch event, so a
    reconcile can hold one across awaits while the index moves on; ``spec`` is frozen
    (``ferry.domain.frozen``: it cannot be changed, and facts derived from it are kept on it).
    """

    uid: str
    generation: int
    resource_version: str
    annotations: Mapping[str, str]
    finalizers: tuple[str, ...]
    deleting: bool
    """``metadata.deletionTimestamp`` is set: only finalizers keep it."""
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    def condition(self, type_: str) -> Mapping[str, Any] | None:
        for found in self.status.get("conditions") or []:
            if isinstance(found, Mapping) and found.get("type") == type_:
                return found
        return None


@dataclass(frozen=True, slots=True)
class Materialised:
    """A ConfigMap or Secret Ferry made for an entry, as the index last saw it."""

    kind: str
    namespace: str
    name: str
    entry_namespace: str
    entry_name: str
    annotations: Mapping[str, str]
    """Ferry's own annotations on it (entry, revision, hashes)."""
    data_hash: str
    """Hash of its data now: differs from the rendered-hash annotation after a hand edit."""
    uid: str | None = None
    """Which object it is: an update names it as a precondition without reading it first."""


@dataclass(frozen=True, slots=True)
class Workload:
    """A Deployment, StatefulSet or DaemonSet that asked to be rolled when an entry changes."""

    kind: str
    name: str
    config_hash: str | None
    """The content hash its pod template carries now (``ferry.dev/config-hash``)."""


def _one(index: Mapping[Any, Any], key: Any) -> Any:
    store = index.get(key)
    if not store:
        return None
    return next(iter(store))


class NamespaceSpecs(MutableMapping[str, Mapping[str, Any]]):
    """Specs of one kind in one namespace, read lazily from an index of snapshots.

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
        return snapshot.spec  # type: ignore[no-any-return]

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
    entries: Mapping[Key, list[Snapshot]]
    schemas: Mapping[Key, list[Snapshot]]
    flags: Mapping[Key, list[Snapshot]]
    namespaces: Mapping[str, list[tuple[dict[str, str], dict[str, str]]]]
    configmaps: Mapping[str, list[Materialised]]  # entry uid → materialised ConfigMaps
    secrets: Mapping[str, list[Materialised]]  # entry uid → materialised Secrets (an HMAC)
    # (namespace, reload-on entry name) → workloads; one index per kind (Deployment, ...)
    workloads: tuple[Mapping[Key, list[Workload]], ...]

    def entry(self, namespace: str, name: str) -> Snapshot | None:
        return _one(self.entries, (namespace, name))  # type: ignore[no-any-return]

    def schema(self, namespace: str, name: str) -> Snapshot | None:
        return _one(self.schemas, (namespace, name))  # type: ignore[no-any-return]

    def flag(self, namespace: str, name: str) -> Snapshot | None:
        return _one(self.flags, (namespace, name))  # type: ignore[no-any-return]

    def flag_snapshots(self) -> Iterator[tuple[Key, Snapshot]]:
        for key, store in list(self.flags.items()):
            for snapshot in store:
                yield key, snapshot

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

    def namespace_annotations(self, namespace: str) -> dict[str, str]:
        for _, found in self.namespaces.get(namespace, []):
            return found
        return {}

    def materialised(self, uid: str) -> list[Materialised]:
        return [*self.configmaps.get(uid, []), *self.secrets.get(uid, [])]

    def materialised_by_name(self, entry_namespace: str, entry_name: str) -> Iterator[Materialised]:
        """Objects made for an entry of this name, whatever its uid (leftovers of a deleted one)."""
        for store in [*self.configmaps.values(), *self.secrets.values()]:
            for obj in list(store):
                if (obj.entry_namespace, obj.entry_name) == (entry_namespace, entry_name):
                    yield obj

    def reload_targets(self, namespace: str, source_ns: str, entry: str) -> list[Workload]:
        """Workloads in ``namespace`` to roll when entry ``source_ns/entry`` changes there.

        ``ferry.dev/reload-on`` names the entry as ``<namespace>/<name>``, or as ``<name>`` for
        an entry of the workload's own namespace: a bare name never matches an entry from
        another namespace, so no accepted source can roll a workload that did not name it.
        """
        names = [f"{source_ns}/{entry}", *([entry] if source_ns == namespace else [])]
        return [w for index in self.workloads for n in names for w in index.get((namespace, n), [])]

    def entry_keys(self) -> list[Key]:
        return list(self.entries.keys())
