"""Event handlers: every watch event becomes work-queue keys for what it affects.

They are ``async`` (as are the indexes) although they never await: Kopf runs sync handlers in a
thread pool, and a thread hop per watch event costs more than the handler itself.

Handlers only enqueue; they never call the API. Kopf calls them after all indexes are filled.
"""

from __future__ import annotations

import base64
from typing import Any

import kopf

from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.entry import references
from ferry.domain.flagset import CONFIGMAP_NAME
from ferry.domain.hashing import content_hash
from ferry.reconcile.workqueue import QueueKey
from ferry.runtime import Runtime

ENTRY, SCHEMA, FLAG = kinds.CONFIG_ENTRY, kinds.CONFIG_SCHEMA, kinds.FEATURE_FLAG


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    runtime.ready.set()  # Kopf runs non-index handlers only once every index is filled
    return runtime


def _changed(runtime: Runtime, kind: str, event: kopf.RawEvent, body: kopf.Body) -> bool:
    """Whether this event may change what reconciling the object does.

    Every status patch and finalizer update Ferry makes comes back as a watch event; reconciling
    again for those would only find the work done (a plan, perhaps a PostgreSQL read) and, while
    the index lags, write the same status twice. Like controller-runtime's generation-changed
    predicate, only a new generation (spec), a deletion, a change of annotations (who changed
    it, why) or the object's first event count. The periodic resync covers the rest.
    """
    meta = body.get("metadata") or {}
    key = QueueKey(kind, str(meta.get("namespace")), str(meta.get("name")))
    if event.get("type") == "DELETED":
        runtime.seen.pop(key, None)
        return True
    signature = (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp") is not None,
        # A hash, not the items: kubectl's last-applied-configuration annotation holds the
        # whole object, and this is kept for every Ferry object.
        hash(tuple(sorted((meta.get("annotations") or {}).items()))),
    )
    if runtime.seen.get(key) == signature:
        return False
    runtime.seen[key] = signature
    return True


@kopf.on.event(kinds.GROUP, kinds.VERSION, ENTRY.plural)
async def entry_changed(
    memo: kopf.Memo,
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str,
    name: str,
    **_: Any,
) -> None:
    runtime = _runtime(memo)
    if not _changed(runtime, ENTRY.kind, event, body):
        return
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    runtime.entries.saw_refresh(namespace, name, annotations.get(L.REFRESH))
    runtime.enqueue_entry(namespace, name)
    for user in runtime.entries.users_of(ENTRY.kind, namespace, name):
        runtime.enqueue_entry(namespace, user)
    # The schema it names now and the one it named before count their users again (usedBy).
    schema = references(body.get("spec") or {})[0]
    before = runtime.schema_refs.pop((namespace, name), None)
    if schema is not None and event.get("type") != "DELETED":
        runtime.schema_refs[(namespace, name)] = schema
    for counted in {schema, before} - {None}:
        runtime.enqueue(SCHEMA.kind, namespace, str(counted))


@kopf.on.event(kinds.GROUP, kinds.VERSION, SCHEMA.plural)
async def schema_changed(
    memo: kopf.Memo,
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str,
    name: str,
    **_: Any,
) -> None:
    runtime = _runtime(memo)
    if not _changed(runtime, SCHEMA.kind, event, body):
        return
    runtime.enqueue(SCHEMA.kind, namespace, name)
    for user in runtime.entries.users_of(SCHEMA.kind, namespace, name):
        runtime.enqueue_entry(namespace, user)


@kopf.on.event(kinds.GROUP, kinds.VERSION, FLAG.plural)
async def flag_changed(
    memo: kopf.Memo, event: kopf.RawEvent, body: kopf.Body, namespace: str, name: str, **_: Any
) -> None:
    runtime = _runtime(memo)
    if _changed(runtime, FLAG.kind, event, body):
        runtime.enqueue(FLAG.kind, namespace, name)


@kopf.on.event("v1", "namespaces")
async def namespace_changed(memo: kopf.Memo, **_: Any) -> None:
    """A namespace appeared, changed labels or went: entries and flags that target it look again."""
    runtime = _runtime(memo)
    for namespace, name in runtime.world.flag_keys():
        runtime.enqueue(FLAG.kind, namespace, name)
    for namespace, name in runtime.world.entry_keys():
        entry = runtime.world.entry(namespace, name)
        target = (entry.spec.get("target") if entry else None) or {}
        if target.get("namespaces") or target.get("namespaceSelector") is not None:
            runtime.enqueue_entry(namespace, name)


async def _materialised_changed(
    memo: kopf.Memo,
    event: kopf.RawEvent,
    annotations: kopf.Annotations,
    body: kopf.Body,
    namespace: str,
    name: str,
    **_: Any,
) -> None:
    """A ConfigMap or Secret Ferry made was deleted or edited by someone else: restore it."""
    runtime = _runtime(memo)
    entry_namespace = annotations.get(L.ENTRY_NAMESPACE)
    entry_name = annotations.get(L.ENTRY_NAME)
    if not entry_namespace or not entry_name:
        return
    kind = str(body.get("kind") or "ConfigMap")
    deleted = event.get("type") == "DELETED"
    if deleted:
        runtime.entries.forget(kind, namespace, name)
    if deleted or _edited(memo, kind, body, annotations, namespace, name):
        runtime.enqueue_entry(entry_namespace, entry_name)


for _plural in ("configmaps", "secrets"):
    kopf.on.event(
        "v1", _plural, labels={L.MANAGED_BY: L.MANAGED_BY_FERRY}, id=f"materialised_{_plural}"
    )(_materialised_changed)


@kopf.on.event("v1", "configmaps")
async def any_configmap_changed(
    memo: kopf.Memo, event: kopf.RawEvent, namespace: str, name: str, **_: Any
) -> None:
    """A ConfigMap Ferry refused to overwrite is gone: the entry it blocked can write now."""
    if event.get("type") == "DELETED":
        runtime = _runtime(memo)
        if (blocked := runtime.entries.unblocked_by(namespace, name)) is not None:
            runtime.enqueue_entry(*blocked)


@kopf.on.event("v1", "configmaps", labels={L.MANAGED_BY: L.MANAGED_BY_FERRY, L.FLAGSET: "true"})
async def flagset_changed(
    memo: kopf.Memo,
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    annotations: kopf.Annotations,
    body: kopf.Body,
    **_: Any,
) -> None:
    """A ``ferry-flags`` ConfigMap was deleted or edited by someone else: rebuild it."""
    deleted = event.get("type") == "DELETED"
    if name == CONFIGMAP_NAME and (
        deleted or _edited(memo, "ConfigMap", body, annotations, namespace, name)
    ):
        _runtime(memo).enqueue(kinds.FLAG_SET, namespace)


def _edited(
    memo: kopf.Memo,
    kind: str,
    body: kopf.Body,
    annotations: kopf.Annotations,
    namespace: str,
    name: str,
) -> bool:
    """Its data no longer matches the hash Ferry wrote beside it (an HMAC for a Secret)."""
    data = dict(body.get("data") or {})
    if kind == "Secret":
        vault = memo.get("vault")
        if vault is None:
            return False
        decoded = {k: base64.b64decode(v) for k, v in data.items()}
        return bool(vault.digest(namespace, name, decoded) != annotations.get(L.RENDERED_HASH))
    return content_hash(data) != annotations.get(L.RENDERED_HASH)


async def _workload_changed(
    memo: kopf.Memo, namespace: str, annotations: kopf.Annotations, **_: Any
) -> None:
    """A workload asked to reload on an entry (``<namespace>/<name>``, or ``<name>`` of its own
    namespace): reconcile that entry, which rolls the workload if its hash is behind."""
    wanted = str(annotations.get(L.RELOAD_ON) or "")
    source_ns, _, entry = wanted.rpartition("/")
    if entry:
        _runtime(memo).enqueue_entry(source_ns or namespace, entry)


for _plural in ("deployments", "statefulsets", "daemonsets"):
    kopf.on.event(
        "apps", "v1", _plural, annotations={L.RELOAD_ON: kopf.PRESENT}, id=f"{_plural}_changed"
    )(_workload_changed)
