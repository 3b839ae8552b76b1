"""The Kubernetes API, asynchronously, through lightkube.

Why lightkube: it is async-native, speaks server-side apply directly, handles custom resources as
generic classes, and is actively maintained; see docs/decisions/0002-kubernetes-client.md.
Kopf keeps its own client for watching; this module is for what Ferry writes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Secret
from lightkube.types import PatchType

from ferry.adapters import kube_client
from ferry.adapters.events import EventRecorder
from ferry.domain import kinds
from ferry.domain.placement import Desired

FIELD_MANAGER = "ferry"
TIMEOUT_SECONDS = 15.0

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
    return kube_client.make_client(
        kubeconfig, timeout_seconds=TIMEOUT_SECONDS, field_manager=FIELD_MANAGER
    )


@dataclass(frozen=True)
class Live:
    """A materialised object as :meth:`Kube.read` found it: which object, and its labels and
    annotations (``None``: it has none at all)."""

    uid: str
    labels: dict[str, str] | None
    annotations: dict[str, str] | None


def _data(desired: Desired) -> dict[str, str]:
    """The object's ``data`` as the API takes it: a Secret's base64-encoded here, and only here."""
    if desired.kind != "Secret":
        return dict(desired.data)
    return {
        k: base64.b64encode(v.encode("utf-8", "surrogatepass")).decode()
        for k, v in desired.data.items()
    }


def _object(desired: Desired) -> ConfigMap | Secret:
    metadata = ObjectMeta(
        name=desired.name,
        namespace=desired.namespace,
        labels=dict(desired.labels),
        annotations=dict(desired.annotations),
    )
    if desired.kind == "Secret":
        return Secret(metadata=metadata, type="Opaque", data=_data(desired))
    return ConfigMap(metadata=metadata, data=_data(desired))


class Kube:
    """The handful of writes and reads the reconcilers need, with Kubernetes errors normalised."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._http: httpx.AsyncClient | None = None
        #: Events about Ferry's objects: recorded without waiting, written in the background.
        self.events = EventRecorder(client)

    async def close(self) -> None:
        await self.events.close()
        await self.client.close()
        if self._http is not None:
            await self._http.aclose()

    def _raw(self) -> httpx.AsyncClient:
        """lightkube's HTTP client for this client's configuration, for the one request
        lightkube's API cannot express: a delete with preconditions."""
        if self._http is None:
            self._http = kube_client.raw_http(self.client.config, timeout_seconds=TIMEOUT_SECONDS)
        return self._http

    async def get_configmap(self, namespace: str, name: str) -> ConfigMap | None:
        try:
            return await self.client.get(ConfigMap, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    async def create(self, desired: Desired) -> str:
        """Create a ConfigMap or Secret that must not exist yet; returns its uid.

        Raises ``ApiError`` 409 (AlreadyExists) if anything is there by that name, whoever made
        it: unlike an apply, a create can never overwrite what someone else made a moment ago.
        """
        result = await self.client.create(_object(desired), field_manager=FIELD_MANAGER)
        assert result.metadata is not None
        return str(result.metadata.uid)

    async def update(self, desired: Desired, uid: str, live: Live | None = None) -> None:
        """Make the object with ``uid`` hold exactly ``desired``'s data and Ferry's labels and
        annotations (anyone else's labels and annotations stay).

        One JSON patch whose first operation tests the uid, so if the object was deleted, or
        deleted and made again by someone else, nothing is written: ``ApiError`` 404, or 422
        for the failed test. ``data`` is replaced whole, so keys that are no longer rendered go.
        ``live`` (from :meth:`read`) tells whether the object has labels and annotations at all.
        """
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/data", "value": _data(desired)},
        ]
        for field, wanted in (("labels", desired.labels), ("annotations", desired.annotations)):
            if live is not None and getattr(live, field) is None:
                ops.append({"op": "add", "path": f"/metadata/{field}", "value": dict(wanted)})
                continue
            for key, value in wanted.items():
                pointer = key.replace("~", "~0").replace("/", "~1")
                ops.append({"op": "add", "path": f"/metadata/{field}/{pointer}", "value": value})
        await self.client.patch(
            MATERIALISED[desired.kind],
            desired.name,
            ops,
            namespace=desired.namespace,
            patch_type=PatchType.JSON,
        )

    async def read(self, kind: str, namespace: str, name: str) -> Live | None:
        """A ConfigMap's or Secret's identity and labels (None: no such object). Only metadata
        is kept: a Secret's data is never looked at here."""
        try:
            obj = await self.client.get(MATERIALISED[kind], name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        meta = obj.metadata or ObjectMeta()
        return Live(
            uid=str(meta.uid),
            labels=dict(meta.labels) if meta.labels is not None else None,
            annotations=dict(meta.annotations) if meta.annotations is not None else None,
        )

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str) -> bool:
        """Delete a ConfigMap or Secret, only if it is still the object with ``uid`` (a UID
        precondition): False if it is gone, or is another object now."""
        api = "api/v1"
        plural = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        # lightkube's delete takes no preconditions; its own HTTP client (same kubeconfig,
        # credentials and timeout) sends the DeleteOptions body.
        response = await self._raw().request(
            "DELETE", f"/{api}/namespaces/{namespace}/{plural}/{name}", json=body
        )
        if response.status_code in (404, 409):  # gone, or not the object we meant
            return False
        if response.status_code >= 400:
            raise ApiError(request=response.request, response=response)
        return True

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
