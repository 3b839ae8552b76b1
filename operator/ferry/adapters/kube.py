"""The Kubernetes API, asynchronously, through lightkube.

Why lightkube: it is async-native, speaks server-side apply directly, handles custom resources as
generic classes, and is actively maintained; see docs/decisions/0002-kubernetes-client.md.
Kopf keeps its own client for watching; this module is for what Ferry writes.
"""

from __future__ import annotations

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
from lightkube.resources.core_v1 import ConfigMap, Event
from lightkube.types import PatchType

FIELD_MANAGER = "ferry"
GROUP, VERSION = "ferry.dev", "v1alpha1"

ConfigEntry = create_namespaced_resource(GROUP, VERSION, "ConfigEntry", "configentries")
ConfigSchema = create_namespaced_resource(GROUP, VERSION, "ConfigSchema", "configschemas")
FeatureFlag = create_namespaced_resource(GROUP, VERSION, "FeatureFlag", "featureflags")
KINDS = {"ConfigEntry": ConfigEntry, "ConfigSchema": ConfigSchema, "FeatureFlag": FeatureFlag}
WORKLOADS = {"Deployment": Deployment, "StatefulSet": StatefulSet, "DaemonSet": DaemonSet}


class TransientApiError(Exception):
    """A conflict, a 5xx or a network error: retry the whole step later."""


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

    async def apply_configmap(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
    ) -> str:
        """Server-side apply (field manager ``ferry``); returns the new resourceVersion."""
        obj = ConfigMap(
            metadata=ObjectMeta(
                name=name, namespace=namespace, labels=dict(labels), annotations=dict(annotations)
            ),
            data=dict(data),
        )
        result = await self.client.apply(obj, field_manager=FIELD_MANAGER, force=True)
        assert result.metadata is not None
        return str(result.metadata.resourceVersion)

    async def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            await self.client.delete(ConfigMap, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def list_configmaps(self, label_selector: Mapping[str, str]) -> list[ConfigMap]:
        return [
            cm async for cm in self.client.list(ConfigMap, namespace="*", labels=label_selector)
        ]

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
                apiVersion=involved.get("apiVersion", f"{GROUP}/{VERSION}"),
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
