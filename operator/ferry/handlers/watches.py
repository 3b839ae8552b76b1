"""Event handlers: every watch event becomes work-queue keys for what it affects.

They are ``async`` (as are the indexes) although they never await: Kopf runs sync handlers in a
thread pool, and a thread hop per watch event costs more than the handler itself.

Handlers only enqueue; they never call the API. Kopf calls them after all indexes are filled.
"""

from __future__ import annotations

from typing import Any

import kopf

from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.entry import references
from ferry.domain.targets import targets_elsewhere
from ferry.reconcile.workqueue import QueueKey
from ferry.runtime import Runtime

ENTRY, SCHEMA, FLAG = kinds.CONFIG_ENTRY, kinds.CONFIG_SCHEMA, kinds.FEATURE_FLAG


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    runtime.kopf_indexed.set()  # Kopf runs non-index handlers only once every index is filled
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
    if targets_elsewhere((body.get("spec") or {}).get("target")) and event.get("type") != "DELETED":
        runtime.targeting.add((namespace, name))
    else:
        runtime.targeting.discard((namespace, name))
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
async def namespace_changed(
    memo: kopf.Memo, event: kopf.RawEvent, name: str, annotations: kopf.Annotations, **_: Any
) -> None:
    """A namespace appeared, changed labels or went: entries and flags that target it look again.
    When its ``ferry.dev/vault-paths`` annotation changed, so do the entries in it: a path the
    platform team took back must stop being read now, not at the next resync."""
    runtime = _runtime(memo)
    for namespace, entry in runtime.world.flag_keys():
        runtime.enqueue(FLAG.kind, namespace, entry)
    for namespace, entry in list(runtime.targeting):
        runtime.enqueue_entry(namespace, entry)
    if event.get("type") == "DELETED":
        runtime.vault_paths.pop(name, None)
        return
    paths = annotations.get(L.VAULT_PATHS)
    if name in runtime.vault_paths and runtime.vault_paths[name] != paths:
        for namespace, entry in runtime.world.entry_keys():
            if namespace == name:
                runtime.enqueue_entry(namespace, entry)
    runtime.vault_paths[name] = paths  # first sight (start-up): every entry is reconciled anyway
