"""``ferry history-api``: revisions and audit as an aggregated Kubernetes API (decision 0021).

Served at ``/apis/history.ferry.dev/v1alpha1`` behind the API server's aggregation layer (an
APIService), as metrics-server is: read-only, namespaced ``configrevisions`` and
``auditevents``, list (one namespace or all) and get, JSON or a ``meta.k8s.io/v1`` Table (what
``kubectl get`` asks for), field and label selectors.

Whom it trusts (``frontproxy.py``): the caller named in the front proxy's headers, only on a
TLS connection whose client certificate the cluster's front-proxy CA signed; what they may see:
RBAC, by SubjectAccessReview (``get`` or ``list`` on the resource in that namespace, or in all
namespaces), cached a few seconds (``KubeAuth``). The server's own identity needs
``system:auth-delegator`` (the reviews) and to read the front-proxy ConfigMap in kube-system.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from ferry.adapters.kube_auth import Access, AuthUnavailable, KubeAuth, Unauthenticated, User
from ferry.adapters.postgres import StoreUnavailable
from ferry.adapters.postgres.history import AuditQuery, HistoryReader, RevisionQuery
from ferry.domain import labels as L
from ferry.domain.status import status_body
from ferry.history import resources as R
from ferry.historyapi.frontproxy import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, FrontProxy
from ferry.tls import server_context

log = logging.getLogger(__name__)

#: Audit events returned without ``limit`` (the newest); revisions are paged with ``continue``.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
PREFIX = f"/apis/{R.GROUP}/{R.VERSION}"


class Refused(Exception):
    """An error answered as a Kubernetes ``Status``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def status(code: int, message: str) -> web.Response:
    return web.json_response(status_body(code, message), status=code)


@dataclass
class Parts:
    reader: HistoryReader
    auth: KubeAuth
    proxy: FrontProxy


# ------------------------------------------------------------------------------- selectors


Parse = Callable[[str, str], Any]


def _text(value: str, key: str) -> str:
    return value


def _int(value: str, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise R.BadSelector(f'{key}: "{value}" is not a number') from None


def _time(value: str, key: str) -> dt.datetime:
    try:
        return R.parse_time(value)
    except ValueError:
        raise R.BadSelector(f'{key}: "{value}" is not an RFC 3339 time') from None


def _revision_name(value: str, key: str) -> tuple[str, str, int]:
    # An unknown name matches nothing, as a get of it would.
    return R.parse_revision_name(value) or ("", "", -1)


#: Field selector → (query attribute(s), how its value is read), per resource.
_REVISION_FIELDS: dict[str, tuple[str | tuple[str, ...], Parse]] = {
    "metadata.name": (("kind", "name", "revision"), _revision_name),
    "spec.kind": ("kind", _text),
    "spec.entry": ("name", _text),
    "spec.revision": ("revision", _int),
    "spec.changedBy": ("changed_by", _text),
    "current": ("current", lambda value, key: value == "true"),
    "currentAt": ("current_at", _time),
}
_AUDIT_FIELDS: dict[str, tuple[str | tuple[str, ...], Parse]] = {
    "metadata.name": ("id", _int),
    "spec.kind": ("kinds", lambda value, key: (value,)),
    "spec.entry": ("name", _text),
    "spec.user": ("username", _text),
    "spec.action": ("action", _text),
    "since": ("since", _time),
}
#: Label → (query attribute, how its value is read); any other label matches nothing.
_REVISION_LABELS: dict[str, tuple[str, Parse]] = {
    L.ENTRY_NAME: ("name", _text),
    L.REVISION: ("revision", _int),
}
_AUDIT_LABELS: dict[str, tuple[str, Parse]] = {L.ENTRY_NAME: ("name", _text)}


def _selected(
    namespace: str | None,
    fields: str | None,
    labels: str | None,
    known_fields: dict[str, tuple[str | tuple[str, ...], Parse]],
    known_labels: dict[str, tuple[str, Parse]],
    nothing: tuple[str, Any],
    *,
    exclusions: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """The query attributes that the selectors ask for, and (with ``exclusions``) the kinds
    excluded by ``spec.kind!=``. ``nothing``: an attribute and value that match no row, for a
    label no object carries."""
    values: dict[str, Any] = {"namespace": namespace}
    excluded: list[str] = []
    for req in R.parse_selector(fields, "field selector"):
        if exclusions and req.key == "spec.kind" and not req.equal:
            excluded.append(req.value)
            continue
        _equality(req, "field selector")
        if req.key == "metadata.namespace":
            values["namespace"] = _same(values.get("namespace"), req.value, req.key)
            continue
        if req.key not in known_fields:
            raise R.BadSelector(f'field label not supported: "{req.key}"')
        attribute, parse = known_fields[req.key]
        value = parse(req.value, req.key)
        if isinstance(attribute, tuple):
            values.update(zip(attribute, value, strict=True))
        else:
            values[attribute] = value
    for req in R.parse_selector(labels, "label selector"):
        _equality(req, "label selector")
        if req.key in known_labels:
            attribute, parse = known_labels[req.key]
            values[attribute] = parse(req.value, req.key)
        else:
            values[nothing[0]] = nothing[1]
    return values, excluded


def _revision_query(namespace: str | None, fields: str | None, labels: str | None) -> RevisionQuery:
    """Field selectors: metadata.namespace, metadata.name, spec.kind, spec.entry,
    spec.revision, spec.changedBy, current=true, currentAt=<RFC 3339>; labels
    ferry.dev/entry-name and ferry.dev/revision. Equality only."""
    values, _ = _selected(
        namespace, fields, labels, _REVISION_FIELDS, _REVISION_LABELS, ("revision", -1)
    )
    return RevisionQuery(**values)


def _audit_query(
    namespace: str | None, fields: str | None, labels: str | None, limit: int
) -> AuditQuery:
    """Field selectors: metadata.namespace, metadata.name (the row id), spec.kind (= or !=),
    spec.entry, spec.user, spec.action, since=<RFC 3339>; label ferry.dev/entry-name."""
    values, excluded = _selected(
        namespace, fields, labels, _AUDIT_FIELDS, _AUDIT_LABELS, ("id", -1), exclusions=True
    )
    return AuditQuery(excluded_kinds=tuple(excluded), limit=limit, **values)


def _equality(req: R.Requirement, what: str) -> None:
    if not req.equal:
        raise R.BadSelector(f'{what} "{req.key}!={req.value}" is not supported here: use "="')


def _same(current: str | None, value: str, key: str) -> str:
    if current is not None and current != value:
        raise R.BadSelector(f"{key}={value} contradicts the namespace of the request ({current})")
    return value


# ------------------------------------------------------------------------------- handlers


def _peercert(request: web.Request) -> dict[str, Any] | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.getpeercert() if ssl_object is not None else None


async def _caller(parts: Parts, request: web.Request) -> User:
    try:
        return parts.proxy.user(_peercert(request), request.headers)
    except Unauthenticated as exc:
        raise Refused(401, f"Unauthorized: {exc}") from None


async def _authorize(parts: Parts, user: User, access: Access) -> None:
    try:
        decision, _ = await parts.auth.authorize(user, access)
    except AuthUnavailable as exc:
        log.warning("authorization unavailable: %s", exc)
        raise Refused(503, f"cannot check access: {exc}") from None
    if decision.allowed:
        return
    name = f' "{access.name}"' if access.name else ""
    where = (
        f' in the namespace "{access.namespace}"' if access.namespace else " at the cluster scope"
    )
    raise Refused(
        403,
        f'{access.resource}.{access.group}{name} is forbidden: User "{user.username}" cannot '
        f'{access.verb} resource "{access.resource}" in API group "{access.group}"{where}'
        + (f": {decision.reason}" if decision.reason else ""),
    )


def _respond(
    request: web.Request,
    resource: str,
    objects: list[dict[str, Any]],
    *,
    one: bool = False,
    next_page: str | None = None,
) -> web.Response:
    if R.wants_table(request.headers.get("Accept", "")):
        include = request.query.get("includeObject", "Metadata")
        body = R.table(resource, objects, dt.datetime.now(dt.UTC), include, next_page)
        return web.json_response(body, content_type="application/json")
    if one:
        return web.json_response(objects[0])
    return web.json_response(R.list_object(R.RESOURCES[resource], objects, next_page))


def _limit(request: web.Request) -> int | None:
    raw = request.query.get("limit")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise Refused(400, f'limit "{raw}" is not a number') from None
    return max(1, min(value, MAX_LIMIT))


async def _revisions(
    parts: Parts, namespace: str | None, request: web.Request
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of revisions (all of them without ``limit``) and the token of the next."""
    query = _revision_query(
        namespace, request.query.get("fieldSelector"), request.query.get("labelSelector")
    )
    limit = _limit(request)
    after = None
    if token := request.query.get("continue"):
        try:
            after = R.parse_continue(token)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
    found = await parts.reader.revisions(
        dataclasses.replace(query, after=after, limit=None if limit is None else limit + 1)
    )
    more = limit is not None and len(found) > limit
    page = found[:limit] if limit is not None else found
    next_page = R.continue_token(page[-1]) if more and page else None
    return [R.revision_object(r) for r in page], next_page


async def _audit_events(
    parts: Parts, namespace: str | None, request: web.Request
) -> list[dict[str, Any]]:
    """The newest ``limit`` (default 1000) matching audit rows, oldest first: one page."""
    query = _audit_query(
        namespace,
        request.query.get("fieldSelector"),
        request.query.get("labelSelector"),
        _limit(request) or DEFAULT_LIMIT,
    )
    return [R.audit_object(a) for a in await parts.reader.audit_log(query)]


async def _one(parts: Parts, resource: str, namespace: str, name: str) -> list[dict[str, Any]]:
    if resource == R.REVISIONS:
        parsed = R.parse_revision_name(name)
        if parsed is None:
            return []
        kind, entry, number = parsed
        query = RevisionQuery(namespace=namespace, kind=kind, name=entry, revision=number)
        return [R.revision_object(r) for r in await parts.reader.revisions(query)]
    if not name.isdigit():
        return []
    rows = await parts.reader.audit_log(AuditQuery(namespace=namespace, id=int(name), limit=1))
    return [R.audit_object(a) for a in rows]


def make_app(parts: Parts) -> web.Application:
    app = web.Application()

    def guarded(
        handler: Callable[[web.Request, User | None], Awaitable[web.StreamResponse]],
        *,
        discovery: bool = False,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Errors as ``Status``; the caller from the front proxy. Discovery needs only the front
        proxy's certificate (the API server's availability check sends it with no user), and
        says nothing about any tenant."""

        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                if discovery:
                    problem = parts.proxy.trusted(_peercert(request))
                    if problem is not None:
                        raise Refused(401, f"Unauthorized: {problem}")
                    return await handler(request, None)
                return await handler(request, await _caller(parts, request))
            except Refused as exc:
                return status(exc.code, exc.message)
            except R.BadSelector as exc:
                return status(400, str(exc))
            except StoreUnavailable as exc:
                log.warning("history store unavailable: %s", exc)
                return status(503, "the revision store cannot answer now")

        return wrapper

    async def discovery_root(request: web.Request, user: User | None) -> web.StreamResponse:
        return web.json_response(R.api_group_list())

    async def discovery_group(request: web.Request, user: User | None) -> web.StreamResponse:
        return web.json_response(R.api_group())

    async def discovery_version(request: web.Request, user: User | None) -> web.StreamResponse:
        return web.json_response(R.api_resource_list())

    async def collection(request: web.Request, user: User | None) -> web.StreamResponse:
        assert user is not None
        resource = request.match_info["resource"]
        namespace = request.match_info.get("namespace")
        if resource not in R.RESOURCES:
            raise Refused(404, f'the server could not find the resource "{resource}"')
        if request.query.get("watch") in ("true", "1"):
            raise Refused(405, f"{resource} cannot be watched")
        await _authorize(parts, user, Access("list", resource, namespace or "", group=R.GROUP))
        if resource == R.REVISIONS:
            objects, next_page = await _revisions(parts, namespace, request)
            return _respond(request, resource, objects, next_page=next_page)
        return _respond(request, resource, await _audit_events(parts, namespace, request))

    async def item(request: web.Request, user: User | None) -> web.StreamResponse:
        assert user is not None
        resource = request.match_info["resource"]
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if resource not in R.RESOURCES:
            raise Refused(404, f'the server could not find the resource "{resource}"')
        await _authorize(parts, user, Access("get", resource, namespace, name, group=R.GROUP))
        objects = await _one(parts, resource, namespace, name)
        if not objects:
            raise Refused(404, f'{R.RESOURCES[resource].qualified} "{name}" not found')
        return _respond(request, resource, objects, one=True)

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def not_served(request: web.Request) -> web.StreamResponse:
        return status(404, "not served")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/openapi/v2", not_served)
    app.router.add_get("/openapi/v3", not_served)
    app.router.add_get("/apis", guarded(discovery_root, discovery=True))
    app.router.add_get(f"/apis/{R.GROUP}", guarded(discovery_group, discovery=True))
    app.router.add_get(PREFIX, guarded(discovery_version, discovery=True))
    app.router.add_get(f"{PREFIX}/{{resource}}", guarded(collection))
    app.router.add_get(f"{PREFIX}/namespaces/{{namespace}}/{{resource}}", guarded(collection))
    app.router.add_get(f"{PREFIX}/namespaces/{{namespace}}/{{resource}}/{{name}}", guarded(item))
    return app


# ------------------------------------------------------------------------------- running


async def front_proxy(client: AsyncClient, timeout: float = 60.0) -> FrontProxy:
    """The cluster's front-proxy settings, waiting (bounded) for the API server to publish
    them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            found = await client.get(ConfigMap, CONFIGMAP_NAME, namespace=CONFIGMAP_NAMESPACE)
            return FrontProxy.from_configmap(found.data or {})
        except (ApiError, ValueError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"cannot read {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {exc}"
                ) from exc
        await asyncio.sleep(1)


@dataclass(frozen=True)
class Options:
    database_url: str
    kubeconfig: str | None
    host: str
    port: int
    cert: Path
    key: Path
    auth_cache_ttl_seconds: float = 10.0


async def follow_certificate(
    context: ssl.SSLContext, cert: Path, key: Path, every_seconds: float = 30.0
) -> None:
    """Serve a renewed certificate (cert-manager or the chart's Secret, mounted: kubelet swaps
    the files) from the next handshake on, without a restart: the same context loads the new
    pair, which OpenSSL uses for every later connection. A pair that does not load (caught
    half-written) leaves the previous one served and is tried again next time."""

    def stamp() -> tuple[float, float]:
        return cert.stat().st_mtime, key.stat().st_mtime

    seen = stamp()
    while True:
        await asyncio.sleep(every_seconds)
        try:
            now = stamp()
            if now != seen:
                context.load_cert_chain(cert, key)
                seen = now
                log.info("serving the renewed certificate from %s", cert)
        except (OSError, ssl.SSLError) as exc:
            log.warning("renewed certificate not loaded yet: %s", exc)


async def run(options: Options, stop: asyncio.Event) -> None:
    from ferry.adapters.kube_auth import make_client

    client = make_client(options.kubeconfig)
    auth = KubeAuth(client, audience=None, ttl_seconds=options.auth_cache_ttl_seconds)
    reader = HistoryReader(options.database_url)
    try:
        proxy = await front_proxy(client)
        context: ssl.SSLContext = server_context(options.cert, options.key)
        proxy.require_client_certificate(context)
        await reader.open()
        runner = web.AppRunner(make_app(Parts(reader, auth, proxy)), access_log=None)
        await runner.setup()
        renewals = asyncio.create_task(follow_certificate(context, options.cert, options.key))
        try:
            await web.TCPSite(runner, options.host, options.port, ssl_context=context).start()
            log.info("history API on https://%s:%d%s", options.host, options.port, PREFIX)
            await stop.wait()
        finally:
            renewals.cancel()
            await runner.cleanup()
    finally:
        await reader.close()
        await auth.close()
