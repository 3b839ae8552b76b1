"""Kopf indexes: Ferry's own kinds and the namespaces, the picture of the cluster the
reconcilers read (ConfigMaps, Secrets and workloads come from ``ferry.handlers.followed``).

Each returns plain copies of just what the reconcilers need, so memory stays small with thousands
of objects and nothing aliases Kopf's own bodies.
"""

from __future__ import annotations

import copy
from typing import Any

import kopf

from ferry.domain import kinds
from ferry.reconcile.world import Snapshot


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
