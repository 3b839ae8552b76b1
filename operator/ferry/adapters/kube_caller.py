"""The Kubernetes API as the person running the ``ferry`` CLI: their kubeconfig, optionally
impersonating (kubectl's ``--as``/``--as-group``), synchronously.

``adapters/kube.py`` is Kubernetes as the operator (its own identity, async); this module is the
other side, used by the history service and ``ferry validate --cluster``. History lives in
PostgreSQL, which has no notion of Kubernetes users, so the CLI asks the API server before it
shows anything: a user may read an object's history exactly when RBAC lets them ``get`` the
object (a SelfSubjectAccessReview, made with the caller's own credentials). Writes (rollback,
restore) go through the API server as the caller, so RBAC and the admission webhooks apply to
them as to any ``kubectl`` edit.

Aggregated APIs (Ferry's history API, ``history.ferry.dev``) are read the same way, as the
caller, through the API server: :meth:`Cluster.list_aggregated`. The extension server then
checks RBAC itself, for the identity the API server vouched for.

Errors: everything raised here is a :class:`ClusterError`, with :class:`AccessDenied` when RBAC
said no; messages name the object.
"""

from __future__ import annotations

import base64
import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube import ALL_NS, ApiError, Client, KubeConfig
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from ferry.adapters.kube import KINDS
from ferry.domain import kinds


class ClusterError(Exception):
    """Base of every error of this adapter: the kubeconfig, the network or the API server."""


class AccessDenied(ClusterError):
    """Kubernetes RBAC does not let the caller see or change the object."""


class AlreadyExists(ClusterError):
    """A create found the object there (made by someone else since it was read as missing)."""


@dataclass(frozen=True)
class Identity:
    """Who the CLI acts as: kubeconfig (default: $KUBECONFIG or ~/.kube/config), context, and
    kubectl's ``--as``/``--as-group`` impersonation."""

    kubeconfig: str | None = None
    context: str | None = None
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()


def _plural(kind: str) -> str:
    return "secrets" if kind == "Secret" else kinds.BY_NAME[kind].plural


class Cluster:
    def __init__(self, identity: Identity, *, field_manager: str = "ferry-cli") -> None:
        try:
            config = (
                KubeConfig.from_file(identity.kubeconfig)
                if identity.kubeconfig
                else KubeConfig.from_env()
            )
            single = config.get(context_name=identity.context) if identity.context else config
            self.client = Client(single, field_manager=field_manager, timeout=httpx.Timeout(15.0))
        except Exception as exc:  # a missing or broken kubeconfig is a user error, not a crash
            raise ClusterError(f"cannot use the kubeconfig: {exc}") from exc
        self.namespace = str(self.client.namespace or "default")
        if identity.as_user or identity.as_groups:
            self._impersonate(identity)

    def _impersonate(self, identity: Identity) -> None:
        # lightkube has no impersonation setting; these are the headers kubectl --as sends.
        http: httpx.Client = self.client._client._client
        items = list(http.headers.multi_items())
        if identity.as_user:
            items.append(("Impersonate-User", identity.as_user))
        items += [("Impersonate-Group", group) for group in identity.as_groups]
        http.headers = httpx.Headers(items)

    def close(self) -> None:
        self.client.close()

    # ----------------------------------------------------------------------------- who and may
    def allowed(self, verb: str, kind: str, namespace: str | None, name: str | None = None) -> bool:
        """Whether RBAC lets the caller ``verb`` a Ferry ``kind`` (or ``Secret``) there."""
        group = "" if kind == "Secret" else kinds.GROUP
        review = SelfSubjectAccessReview(
            spec=SelfSubjectAccessReviewSpec(
                resourceAttributes=ResourceAttributes(
                    group=group,
                    resource=_plural(kind),
                    verb=verb,
                    namespace=namespace,
                    name=name,
                )
            )
        )
        try:
            with _reaching():
                result = self.client.create(review)
        except ApiError as exc:
            raise ClusterError(f"cannot check access: {exc.status.message}") from exc
        return bool(result.status and result.status.allowed)

    def require(
        self, verb: str, kind: str, namespace: str | None, name: str | None, purpose: str
    ) -> None:
        """Raise :class:`AccessDenied`, naming the object, unless RBAC allows ``verb`` on it."""
        if self.allowed(verb, kind, namespace, name):
            return
        if name is not None:
            what = f"{kind} {namespace}/{name}"
        elif namespace is not None:
            what = f'{_plural(kind)} in namespace "{namespace}"'
        else:
            what = f"{_plural(kind)} in all namespaces"
        raise AccessDenied(f"forbidden: you may not {verb} {what}, so {purpose}")

    def list_aggregated(
        self,
        resource: ApiResource,
        namespace: str | None,
        fields: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``resource`` objects in ``namespace`` (None: all namespaces) matching the field
        selector ``fields`` (lightkube's form: a value, or ``operators.not_in``)."""
        where = f'namespace "{namespace}"' if namespace else "all namespaces"
        try:
            with _reaching():
                found = self.client.list(
                    _generic(resource),
                    namespace=namespace or ALL_NS,
                    fields=dict(fields) if fields else None,
                    chunk_size=limit,
                )
                return [dict(o.to_dict()) for o in found]
        except ApiError as exc:
            what = f"{resource.plural}.{resource.group} in {where}"
            if exc.status.code in (404, 503):
                raise ClusterError(
                    f"{what}: the API server cannot serve it ({exc.status.message}); is the "
                    f"APIService {resource.version}.{resource.group} Available?"
                ) from exc
            raise _api_error(exc, what) from exc

    # ----------------------------------------------------------------------------- objects
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with _reaching():
                return dict(self.client.get(KINDS[kind], name, namespace=namespace).to_dict())
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _api_error(exc, f"{kind} {namespace}/{name}") from exc

    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's values, read with the caller's own credentials (None: no such Secret)."""
        try:
            with _reaching():
                found = self.client.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _api_error(exc, f"Secret {namespace}/{name}") from exc
        values = {}
        for key, value in (found.data or {}).items():
            try:
                values[key] = base64.b64decode(value).decode("utf-8")
            except UnicodeDecodeError:  # edited by hand: Ferry writes Vault's text values only
                raise ClusterError(
                    f"Secret {namespace}/{name}: key {key!r} holds bytes that are not UTF-8 text,"
                    " which an export (stringData) cannot carry"
                ) from None
        return values

    def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        try:
            with _reaching():
                found = self.client.list(KINDS[kind], namespace=namespace)
                return [dict(o.to_dict()) for o in found]
        except ApiError as exc:
            raise _api_error(exc, f'{_plural(kind)} in namespace "{namespace}"') from exc

    def json_patch(
        self, kind: str, namespace: str, name: str, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        try:
            with _reaching():
                patched = self.client.patch(
                    KINDS[kind],
                    name,
                    [dict(op) for op in operations],
                    namespace=namespace,
                    patch_type=PatchType.JSON,
                )
        except ApiError as exc:
            raise _api_error(exc, f"{kind} {namespace}/{name}") from exc
        return dict(patched.to_dict())

    def create(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object ``document`` describes; :class:`AlreadyExists` if it is there."""
        kind = str(document.get("kind"))
        meta = document.get("metadata") or {}
        what = f"{kind} {meta.get('namespace')}/{meta.get('name')}"
        try:
            with _reaching():
                created = self.client.create(KINDS[kind].from_dict(dict(document)))
        except ApiError as exc:
            if exc.status.code == 409:
                raise AlreadyExists(f"{what} already exists") from exc
            raise _api_error(exc, what) from exc
        return dict(created.to_dict())


@dataclass(frozen=True)
class ApiResource:
    """A namespaced resource of another API group (e.g. an aggregated API), read generically."""

    group: str
    version: str
    kind: str
    plural: str


@functools.cache
def _generic(resource: ApiResource) -> type[GenericNamespacedResource]:
    return create_namespaced_resource(
        resource.group, resource.version, resource.kind, resource.plural, verbs=["get", "list"]
    )


@contextlib.contextmanager
def _reaching() -> Iterator[None]:
    """A call to the API server: its answers (:class:`ApiError`) pass to the caller, which knows
    what each means for it; no answer at all (a connection refused, a timeout) is said here."""
    try:
        yield
    except ApiError:
        raise
    except httpx.HTTPError as exc:
        raise ClusterError(f"cannot reach the Kubernetes API: {exc}") from exc


def _api_error(exc: ApiError, what: str) -> ClusterError:
    message = exc.status.message or str(exc)
    if exc.status.code == 403:
        return AccessDenied(f"forbidden: {what}: {message}")
    return ClusterError(f"{what}: {message}")
