"""Kopf indexes: the in-memory picture of the cluster the reconcilers read.

Each returns plain copies of just what the reconcilers need, so memory stays small with thousands
of objects and nothing aliases Kopf's own bodies.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import kopf

from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.flagset import CONFIGMAP_NAME, parse_listing
from ferry.domain.hashing import content_hash
from ferry.reconcile.world import Materialised, Snapshot, Workload


def _snapshot(body: kopf.Body) -> Snapshot:
    meta = body.get("metadata", {})
    return Snapshot(
        uid=str(meta.get("uid")),
        generation=int(meta.get("generation", 0)),
        resource_version=str(meta.get("resourceVersion")),
        annotations=dict(meta.get("annotations") or {}),
        finalizers=tuple(meta.get("finalizers") or ()),
        deleting=meta.get("deletionTimestamp") is not None,
        spec=copy.deepcopy(dict(body.get("spec") or {})),
        status=copy.deepcopy(dict(body.get("status") or {})),
    )


@kopf.index(kinds.GROUP, kinds.VERSION, kinds.CONFIG_ENTRY.plural)
async def entries_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _snapshot(body)}


@kopf.index(kinds.GROUP, kinds.VERSION, kinds.CONFIG_SCHEMA.plural)
async def schemas_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _snapshot(body)}


@kopf.index(kinds.GROUP, kinds.VERSION, kinds.FEATURE_FLAG.plural)
async def flags_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _snapshot(body)}


@kopf.index("v1", "namespaces")
async def namespaces_index(
    name: str, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any
) -> dict[Any, Any]:
    return {name: (dict(labels), dict(annotations))}


def _materialised(
    kind: str, namespace: str, name: str, annotations: kopf.Annotations, data_hash: str
) -> Materialised:
    kept = (L.ENTRY_NAMESPACE, L.ENTRY_NAME, L.REVISION, L.HASH, L.RENDERED_HASH)
    return Materialised(
        kind=kind,
        namespace=namespace,
        name=name,
        entry_namespace=str(annotations.get(L.ENTRY_NAMESPACE, "")),
        entry_name=str(annotations.get(L.ENTRY_NAME, "")),
        annotations={k: annotations[k] for k in kept if k in annotations},
        data_hash=data_hash,
    )


@kopf.index("v1", "configmaps", labels={L.MANAGED_BY: L.MANAGED_BY_FERRY})
async def configmaps_index(
    body: kopf.Body,
    namespace: str,
    name: str,
    labels: kopf.Labels,
    annotations: kopf.Annotations,
    **_: Any,
) -> dict[Any, Any] | None:
    uid = labels.get(L.ENTRY_UID)
    if not uid:
        return None
    data_hash = content_hash(dict(body.get("data") or {}))
    return {uid: _materialised("ConfigMap", namespace, name, annotations, data_hash)}


@kopf.index("v1", "secrets", labels={L.MANAGED_BY: L.MANAGED_BY_FERRY})
async def secrets_index(
    body: kopf.Body,
    memo: kopf.Memo,
    namespace: str,
    name: str,
    labels: kopf.Labels,
    annotations: kopf.Annotations,
    **_: Any,
) -> dict[Any, Any] | None:
    """Secrets Ferry made, with an HMAC of their data (the operator's key) and nothing else of
    it: drift is seen without any value, or a plain hash of one, kept in memory."""
    uid = labels.get(L.ENTRY_UID)
    vault = memo.get("vault")
    if not uid or vault is None:
        return None
    data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
    data_hash = vault.digest(namespace, name, data)
    return {uid: _materialised("Secret", namespace, name, annotations, data_hash)}


@kopf.index("v1", "configmaps")
async def configmap_owners_index(
    namespace: str, name: str, labels: kopf.Labels, **_: Any
) -> dict[Any, Any]:
    """Every ConfigMap in the cluster → the uid of the entry that made it ("" if none did).

    Ferry never overwrites a ConfigMap it did not create; with this index that check is a lookup
    instead of a GET before each first write. Kopf receives every ConfigMap event anyway (it
    watches a resource whole and filters per handler), so the cost is a name per ConfigMap.
    """
    return {(namespace, name): labels.get(L.ENTRY_UID, "")}


@kopf.index("v1", "configmaps", labels={L.MANAGED_BY: L.MANAGED_BY_FERRY, L.FLAGSET: "true"})
async def flagsets_index(
    namespace: str, name: str, annotations: kopf.Annotations, **_: Any
) -> dict[Any, Any] | None:
    """Target namespace → the flags its ``ferry-flags`` lists (where a flag is served now)."""
    if name != CONFIGMAP_NAME:
        return None
    return {namespace: {"flags": parse_listing(annotations)}}


def _workload_index(kind: str):  # type: ignore[no-untyped-def]
    async def index(
        body: kopf.Body, namespace: str, name: str, annotations: kopf.Annotations, **_: Any
    ) -> dict[Any, Any]:
        template = (body.get("spec") or {}).get("template") or {}
        current = ((template.get("metadata") or {}).get("annotations") or {}).get(L.CONFIG_HASH)
        return {(namespace, annotations[L.RELOAD_ON]): Workload(kind, name, current)}

    index.__name__ = f"{kind.lower()}s_index"
    return index


for _kind, _plural in (
    ("Deployment", "deployments"),
    ("StatefulSet", "statefulsets"),
    ("DaemonSet", "daemonsets"),
):
    kopf.index(
        "apps", "v1", _plural, annotations={L.RELOAD_ON: kopf.PRESENT}, id=f"{_plural}_index"
    )(_workload_index(_kind))
