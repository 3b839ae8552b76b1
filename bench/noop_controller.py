"""The floor for a controller: a watch event (ConfigEntry's twin) → a server-side applied ConfigMap.

The shortest path any operator of this shape has from a custom resource to a ConfigMap, in
Python on the same client library as Ferry (lightkube, asyncio): no index, no validation, no
revision in PostgreSQL, no ownership check, no status. It serves ConfigEntry's twin (the same
CRD in an API group of its own, ``floors.install_twin``) in every namespace, so that
``bench/reconcile_bench.py`` runs it beside the operator and Ferry's latency can be read against
it as well as against a plain ConfigMap create.

    python bench/noop_controller.py KUBECONFIG
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx2 as httpx
from floors import TwinEntry
from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from ferry.adapters import kube_client


async def main(kubeconfig: str) -> None:
    # The same HTTP stack as Ferry (decision 0028), so the floor differs from Ferry only in
    # what it does.
    client = kube_client.make_client(kubeconfig, timeout_seconds=15.0, field_manager="noop")
    while True:  # right after start the API server answers 429 until the CRD's storage is ready
        try:
            await copy_entries(client)
        except (httpx.HTTPError, ApiError):
            await asyncio.sleep(0.2)


async def copy_entries(client: AsyncClient) -> None:
    async for event, obj in client.watch(TwinEntry, namespace=ALL_NS):
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
    asyncio.run(main(sys.argv[1]))
