"""The floor for a controller: a ConfigEntry watch event → a server-side applied ConfigMap.

The shortest path any operator of this shape has from a custom resource to a ConfigMap, in
Python on the same client library as Ferry (lightkube, asyncio): no index, no validation, no
revision in PostgreSQL, no ownership check, no status. ``bench/reconcile_bench.py`` runs it in
place of the operator, so Ferry's latency can be read against it as well as against a plain
ConfigMap create.

    python bench/noop_controller.py KUBECONFIG NAMESPACE [GROUP]

``GROUP``: serve ConfigEntry's twin in that API group (``floors.install_twin``) instead, so that
the floor can run beside Ferry; ``NAMESPACE`` ``*`` is every namespace.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx2 as httpx
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from ferry.adapters import kube_client
from ferry.adapters.kube import ConfigEntry


async def main(kubeconfig: str, namespace: str, group: str | None) -> None:
    # The same HTTP stack as Ferry (decision 0028), so the floor differs from Ferry only in
    # what it does.
    client = kube_client.make_client(kubeconfig, timeout_seconds=15.0, field_manager="noop")
    while True:  # right after start the API server answers 429 until the CRD's storage is ready
        try:
            await copy_entries(client, namespace, group)
        except (httpx.HTTPError, ApiError):
            await asyncio.sleep(0.2)


async def copy_entries(client: AsyncClient, namespace: str, group: str | None) -> None:
    kind = ConfigEntry
    if group:
        kind = create_namespaced_resource(group, "v1alpha1", "ConfigEntry", "configentries")
    async for event, obj in client.watch(kind, namespace=namespace):
        if event != "ADDED":
            continue
        data = json.dumps((obj.get("spec") or {}).get("data"))
        metadata = obj.metadata
        assert metadata is not None
        configmap = ConfigMap(
            metadata=ObjectMeta(name=metadata.name, namespace=metadata.namespace),
            data={"config.json": data},
        )
        await client.apply(configmap, force=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
