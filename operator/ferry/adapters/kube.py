"""The Kubernetes API, asynchronously, through lightkube.

Why lightkube: it is async-native, speaks server-side apply directly, handles custom resources as
generic classes, and is actively maintained; see docs/decisions/0002-kubernetes-client.md.
Kopf keeps its own client for watching; this module is for what Ferry writes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Event, Secret
from lightkube.types import PatchType

from ferry.domain import kinds
from ferry.domain.placement import Desired

FIELD_MANAGER = "ferry"

KINDS = {
    k.kind: create_namespaced_resource(kinds.GROUP, kinds.VERSION, k.kind, k.plural)
    for k in kinds.ALL
}
ConfigEntry = KINDS[kinds.CONFIG_ENTRY.kind]
ConfigSchema = KINDS[kinds.CONFIG_SCHEMA.kind]
FeatureFlag = KINDS[kinds.FEATURE_FLAG.kind]
WORKLOADS = {"Deployment": Deployment, "StatefulSet": StatefulSet, "DaemonSet": DaemonSet}
MATERIALISED = {"ConfigMap": ConfigMap, "Secret": Secret}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status.code in (409, 429) or (exc.status.code or 0) >= 500
    return isinstance(exc, httpx.TransportError)


def make_client(kubeconfig: str | None) -> AsyncClient:
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    return AsyncClient(config, field_manager=FIELD_MANAGER, timeout=httpx.Timeout(15.0))


class Kube:
    """The handful of writes and reads the reconcilers need, with Kubernetes errors normalised."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def close(self) -> None:
        await self.client.close()

    async def get_configmap(self, namespace: str, name: str) -> ConfigMap | None:
        try:
            return await self.client.get(ConfigMap, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    async def apply(self, desired: Desired) -> str:
        """Server-side apply of a ConfigMap or Secret (field manager ``ferry``); returns the new
        resourceVersion. A Secret's data is base64-encoded here, and only here."""
        metadata = ObjectMeta(
            name=desired.name,
            namespace=desired.namespace,
            labels=dict(desired.labels),
            annotations=dict(desired.annotations),
        )
        obj: ConfigMap | Secret
        if desired.kind == "Secret":
            encoded = {
                k: base64.b64encode(v.encode("utf-8", "surrogatepass")).decode()
                for k, v in desired.data.items()
            }
            obj = Secret(metadata=metadata, type="Opaque", data=encoded)
        else:
            obj = ConfigMap(metadata=metadata, data=dict(desired.data))
        result = await self.client.apply(obj, field_manager=FIELD_MANAGER, force=True)
        assert result.metadata is not None
        return str(result.metadata.resourceVersion)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a ConfigMap or Secret; already gone is fine."""
        try:
            await self.client.delete(MATERIALISED[kind], name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def list_labelled(
        self, kind: str, label_selector: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """(namespace, name) of every ConfigMap or Secret with these labels, cluster-wide."""
        found = self.client.list(MATERIALISED[kind], namespace="*", labels=label_selector)
        return [
            (str(obj.metadata.namespace), str(obj.metadata.name))
            async for obj in found
            if obj.metadata is not None
        ]

    async def owner_label(self, kind: str, namespace: str, name: str, label: str) -> str | None:
        """The value of ``label`` on a ConfigMap or Secret ("" if unlabelled), None if absent.
        Only metadata is kept: a Secret's data is never looked at here."""
        try:
            obj = await self.client.get(MATERIALISED[kind], name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return str(((obj.metadata.labels if obj.metadata else None) or {}).get(label, ""))

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        try:
            await self.client.patch(
                KINDS[kind].Status,
                name,
                {"status": dict(status)},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code != 404:  # deleted meanwhile: nothing to report on
                raise

    async def set_finalizers(
        self, kind: str, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> None:
        """Replace the finalizer list, guarded by resourceVersion (a 409 means: look again)."""
        try:
            await self.client.patch(
                KINDS[kind],
                name,
                {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def patch_spec(
        self,
        kind: str,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        body: dict[str, Any] = {"spec": dict(spec)}
        if annotations:
            body["metadata"] = {"annotations": dict(annotations)}
        await self.client.patch(
            KINDS[kind], name, body, namespace=namespace, patch_type=PatchType.MERGE
        )

    async def set_pod_template_annotation(
        self, kind: str, namespace: str, name: str, key: str, value: str
    ) -> None:
        """Change one pod-template annotation, which makes the workload controller roll pods."""
        patch = {"spec": {"template": {"metadata": {"annotations": {key: value}}}}}
        try:
            await self.client.patch(
                WORKLOADS[kind], name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type: str,
        reason: str,
        message: str,
    ) -> None:
        """A core/v1 Event on an object, as `kubectl describe` shows them. Best effort."""
        now = dt.datetime.now(dt.UTC)
        namespace = involved["namespace"]
        event = Event(
            metadata=ObjectMeta(
                name=f"{involved['name']}.{uuid.uuid4().hex[:12]}", namespace=namespace
            ),
            involvedObject=ObjectReference(
                apiVersion=involved.get("apiVersion", kinds.API_VERSION),
                kind=involved["kind"],
                name=involved["name"],
                namespace=namespace,
                uid=involved.get("uid"),
            ),
            type=type,
            reason=reason,
            message=message[:1024],
            source=EventSource(component="ferry"),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            reportingComponent="ferry",
        )
        # Events are informative; losing one must never fail a reconcile.
        with contextlib.suppress(ApiError, httpx.TransportError):
            await self.client.create(event, namespace=namespace)
