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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from ferry.adapters.kube_auth import Access, AuthUnavailable, KubeAuth, Unauthenticated, User
from ferry.adapters.postgres import AuditRecord, Revision, StoreUnavailable
from ferry.adapters.postgres.history import AuditKey, AuditQuery, HistoryReader, RevisionQuery
from ferry.adapters.postgres.pool import QueryRejected, StatementTimeout
from ferry.domain import labels as L
from ferry.domain.names import is_namespace_name
from ferry.domain.status import status_body
from ferry.history import resources as R
from ferry.historyapi.frontproxy import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, FrontProxy
from ferry.tls import server_context

log = logging.getLogger(__name__)

#: Rows of a page when the request sets no ``limit`` (the API server's own lists have no
#: default, but one tenant's history must not come in one answer; kubectl sends 500 and
#: kubectl, client-go and lightkube follow ``continue``). For audit events, also how many of
#: the newest rows the list holds.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
#: A page stops taking rows once its JSON passes this many bytes, and ends with a ``continue``
#: token (the Kubernetes API lets a server send fewer items than ``limit``): a revision may hold
#: a few MiB, and 500 of them, encoded on the server's only event loop, would stall every other
#: tenant's requests.
PAGE_BYTES = 4 * 1024 * 1024
#: Rows read per statement while a page fills: what a page of large rows holds in memory before
#: the byte cap stops it (16 times a few MiB), against round trips for small ones (32 for 500).
BATCH_ROWS = 16
#: A page that has rows stops reading further batches after this long (each statement is bounded
#: by the reader's statement timeout; this bounds their sum).
PAGE_SECONDS = 5.0
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


#: How a selector's value is read: the value for the query, or None when it names no object
#: (a requirement nothing meets); raises BadSelector when it cannot be read.
Parse = Callable[[str, str], Any]


def _text(value: str, key: str) -> str:
    return value


def _number(maximum: int) -> Parse:
    """A number a column can hold: a larger one is refused, since PostgreSQL would refuse it."""

    def parse(value: str, key: str) -> int:
        number = R.parse_number(value, maximum)
        if number is None:
            raise R.BadSelector(f'{key}: "{value}" is not a number from 0 to {maximum}')
        return number

    return parse


def _bool(value: str, key: str) -> bool:
    if value not in ("true", "false"):
        raise R.BadSelector(f'{key}: "{value}" is not true or false')
    return value == "true"


def _time(value: str, key: str) -> dt.datetime:
    try:  # in UTC: PostgreSQL refuses offsets beyond ±15:59, Python allows up to ±23:59
        return R.parse_time(value).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise R.BadSelector(f'{key}: "{value}" is not an RFC 3339 time') from None


def _revision_name(value: str, key: str) -> tuple[str, str, int] | None:
    # An unknown name matches nothing, as a get of it would.
    return R.parse_revision_name(value)


def _kinds(value: str, key: str) -> tuple[str, ...]:
    return (value,)


_revision_number = _number(R.INT4_MAX)

#: Field selector → (query attribute(s), how its value is read), per resource.
_REVISION_FIELDS: dict[str, tuple[str | tuple[str, ...], Parse]] = {
    "metadata.name": (("kind", "name", "revision"), _revision_name),
    "spec.kind": ("kind", _text),
    "spec.entry": ("name", _text),
    "spec.revision": ("revision", _revision_number),
    "spec.changedBy": ("changed_by", _text),
    "current": ("current", _bool),
    "currentAt": ("current_at", _time),
}
_AUDIT_FIELDS: dict[str, tuple[str | tuple[str, ...], Parse]] = {
    "metadata.name": ("id", _number(R.INT8_MAX)),
    "spec.kind": ("kinds", _kinds),
    "spec.entry": ("name", _text),
    "spec.user": ("username", _text),
    "spec.action": ("action", _text),
    "since": ("since", _time),
}
#: Label → (query attribute, how its value is read); any other label matches nothing.
_REVISION_LABELS: dict[str, tuple[str, Parse]] = {
    L.ENTRY_NAME: ("name", _text),
    L.REVISION: ("revision", _revision_number),
}
_AUDIT_LABELS: dict[str, tuple[str, Parse]] = {L.ENTRY_NAME: ("name", _text)}


@dataclass
class _Selection:
    """The query attributes the selectors ask for, the kinds excluded by ``spec.kind!=``, and
    whether no object can meet them all: requirements are ANDed, so two that want different
    values of one attribute, or one on a label no object carries, match nothing."""

    values: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    nothing: bool = False

    def require(self, attribute: str | tuple[str, ...], value: Any) -> None:
        if value is None:
            self.nothing = True
        elif isinstance(attribute, tuple):
            for one, part in zip(attribute, value, strict=True):
                self.require(one, part)
        elif self.values.setdefault(attribute, value) != value:
            self.nothing = True


def _selected(
    namespace: str | None,
    fields: str | None,
    labels: str | None,
    known_fields: dict[str, tuple[str | tuple[str, ...], Parse]],
    known_labels: dict[str, tuple[str, Parse]],
    *,
    exclusions: bool = False,
) -> _Selection:
    """What the selectors ask for (with ``exclusions``, ``spec.kind!=`` too). Every requirement
    is read, even once nothing can match, so that a bad one is still a 400."""
    selection = _Selection({"namespace": namespace} if namespace is not None else {})
    for req in R.parse_selector(fields, "field selector"):
        if exclusions and req.key == "spec.kind" and not req.equal:
            selection.excluded.append(req.value)
            continue
        _equality(req, "field selector")
        if req.key == "metadata.namespace":
            selection.require("namespace", _same(namespace, req.value, req.key))
            continue
        if req.key not in known_fields:
            raise R.BadSelector(f'field label not supported: "{req.key}"')
        attribute, parse = known_fields[req.key]
        selection.require(attribute, parse(req.value, req.key))
    for req in R.parse_selector(labels, "label selector"):
        _equality(req, "label selector")
        if req.key in known_labels:
            attribute, parse = known_labels[req.key]
            selection.require(attribute, parse(req.value, req.key))
        else:
            selection.nothing = True
    return selection


def _revision_query(
    namespace: str | None, fields: str | None, labels: str | None
) -> RevisionQuery | None:
    """Field selectors: metadata.namespace, metadata.name, spec.kind, spec.entry,
    spec.revision, spec.changedBy, current=true|false, currentAt=<RFC 3339>; labels
    ferry.dev/entry-name and ferry.dev/revision. Equality only. None: nothing can match."""
    selection = _selected(namespace, fields, labels, _REVISION_FIELDS, _REVISION_LABELS)
    return None if selection.nothing else RevisionQuery(**selection.values)


def _audit_query(
    namespace: str | None, fields: str | None, labels: str | None, limit: int
) -> AuditQuery | None:
    """Field selectors: metadata.namespace, metadata.name (the row id), spec.kind (= or !=),
    spec.entry, spec.user, spec.action, since=<RFC 3339>; label ferry.dev/entry-name. None:
    nothing can match."""
    selection = _selected(namespace, fields, labels, _AUDIT_FIELDS, _AUDIT_LABELS, exclusions=True)
    if selection.nothing:
        return None
    return AuditQuery(excluded_kinds=tuple(selection.excluded), limit=limit, **selection.values)


def _equality(req: R.Requirement, what: str) -> None:
    if not req.equal:
        raise R.BadSelector(f'{what} "{req.key}!={req.value}" is not supported here: use "="')


def _same(current: str | None, value: str, key: str) -> str:
    if current is not None and current != value:
        raise R.BadSelector(f"{key}={value} contradicts the namespace of the request ({current})")
    return value


# ------------------------------------------------------------------------------- pages

Row = TypeVar("Row", Revision, AuditRecord)
#: The next rows of a list after one (None: from its start): at most ``count``, stopping at the
#: one that brings their size to ``max_bytes``; and whether more may follow.
Fetch = Callable[[Row | None, int, int], Awaitable[tuple[list[Row], bool]]]


@dataclass
class _Page:
    pieces: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, piece: str) -> None:
        self.pieces.append(piece)
        self.size += len(piece)


async def _fill(
    fetch: Fetch[Row], encode: Callable[[Row], str], limit: int
) -> tuple[list[str], Row | None]:
    """One page: ``limit`` rows at most, read ``BATCH_ROWS`` at a time, and no more once their
    JSON passes ``PAGE_BYTES`` or, with rows in hand, once ``PAGE_SECONDS`` have passed. Returns
    the encoded items and the row to continue after (None: the list ends with this page; a page
    ended by its size or time may be followed by an empty one). Each item is encoded alone, the
    event loop running other requests in between."""
    page = _Page()
    last: Row | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PAGE_SECONDS
    while True:
        wanted = min(BATCH_ROWS, limit - len(page.pieces) + 1)  # + 1: is there more?
        rows, more = await fetch(last, wanted, PAGE_BYTES - page.size)
        for index, row in enumerate(rows):
            if len(page.pieces) == limit:
                return page.pieces, last
            page.add(encode(row))
            last = row
            if page.size >= PAGE_BYTES:
                return page.pieces, last if more or index < len(rows) - 1 else None
            await asyncio.sleep(0)
        if not more:
            return page.pieces, None
        if loop.time() > deadline:
            return page.pieces, last


def _encoder(request: web.Request, resource: str) -> Callable[[dict[str, Any]], str]:
    """How one item of a list is sent: the object, or its Table row."""
    if not R.wants_table(request.headers.get("Accept", "")):
        return R.encode
    include = request.query.get("includeObject", "Metadata")
    now = dt.datetime.now(dt.UTC)
    return lambda obj: R.encode(R.table_row(resource, obj, now, include))


def _list_response(
    request: web.Request, resource: str, pieces: list[str], next_page: str | None
) -> web.Response:
    if R.wants_table(request.headers.get("Accept", "")):
        body = R.encode_with(R.table_head(resource, next_page), "rows", pieces)
    else:
        body = R.encode_with(R.list_head(R.RESOURCES[resource], next_page), "items", pieces)
    return web.Response(text=body, content_type="application/json")


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


def _respond_one(request: web.Request, resource: str, obj: dict[str, Any]) -> web.Response:
    if R.wants_table(request.headers.get("Accept", "")):
        include = request.query.get("includeObject", "Metadata")
        body = R.table(resource, [obj], dt.datetime.now(dt.UTC), include)
        return web.json_response(body, content_type="application/json")
    return web.json_response(obj)


def _limit(request: web.Request) -> int:
    """Rows of this page: ``limit`` (at most ``MAX_LIMIT``), or ``DEFAULT_LIMIT`` without it
    (or with 0, which the Kubernetes API reads as "no limit")."""
    raw = request.query.get("limit")
    if not raw:
        return DEFAULT_LIMIT
    value = R.parse_number(raw, R.INT8_MAX)
    if value is None:
        raise Refused(400, f'limit "{raw}" is not a number')
    return min(value, MAX_LIMIT) or DEFAULT_LIMIT


def _token(request: web.Request, parse: Callable[[str], Any]) -> Any:
    if not (token := request.query.get("continue")):
        return None
    try:
        return parse(token)
    except ValueError as exc:
        raise Refused(400, str(exc)) from None


async def _revisions(
    parts: Parts, namespace: str | None, request: web.Request
) -> tuple[list[str], str | None]:
    """One page of revisions, encoded, and the token of the next."""
    query = _revision_query(
        namespace, request.query.get("fieldSelector"), request.query.get("labelSelector")
    )
    start = _token(request, R.parse_continue)
    if query is None:
        return [], None

    def fetch(
        last: Revision | None, count: int, max_bytes: int
    ) -> Awaitable[tuple[list[Revision], bool]]:
        after = start if last is None else (last.namespace, last.kind, last.name, last.revision)
        return parts.reader.revisions_within(
            dataclasses.replace(query, after=after, limit=count), max_bytes
        )

    encode = _encoder(request, R.REVISIONS)
    pieces, last = await _fill(fetch, lambda r: encode(R.revision_object(r)), _limit(request))
    return pieces, None if last is None else R.continue_token(last)


async def _audit_events(
    parts: Parts, namespace: str | None, request: web.Request
) -> tuple[list[str], str | None]:
    """A page of the newest ``limit`` (default 1000) matching audit rows, oldest first. The
    first page fixes which rows those are (the keys of the oldest and the newest); its token
    carries the newest, so later pages stay within them however many rows arrive meanwhile."""
    limit = _limit(request)
    query = _audit_query(
        namespace, request.query.get("fieldSelector"), request.query.get("labelSelector"), limit
    )
    token: tuple[AuditKey, AuditKey] | None = _token(request, R.parse_audit_continue)
    if query is None:
        return [], None
    if token is None:
        window = await parts.reader.audit_window(query)
        if window is None:
            return [], None
        (oldest_at, oldest_id), until = window
        token = ((oldest_at, oldest_id - 1), until)  # ids are unique: just before the oldest
    start, until = token

    def fetch(
        last: AuditRecord | None, count: int, max_bytes: int
    ) -> Awaitable[tuple[list[AuditRecord], bool]]:
        after = start if last is None else (last.at, last.id)
        return parts.reader.audit_within(
            dataclasses.replace(query, after=after, until=until, limit=count), max_bytes
        )

    encode = _encoder(request, R.AUDIT_EVENTS)
    pieces, last = await _fill(fetch, lambda a: encode(R.audit_object(a)), limit)
    return pieces, None if last is None else R.audit_continue_token((last.at, last.id), until)


async def _one(parts: Parts, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object ``name`` names; None when there is none (or the name cannot be one)."""
    if not is_namespace_name(namespace):
        return None
    if resource == R.REVISIONS:
        parsed = R.parse_revision_name(name)
        if parsed is None:
            return None
        kind, entry, number = parsed
        query = RevisionQuery(namespace=namespace, kind=kind, name=entry, revision=number)
        revisions = await parts.reader.revisions(query)
        return R.revision_object(revisions[0]) if revisions else None
    row_id = R.parse_number(name, R.INT8_MAX)
    if row_id is None:
        return None
    rows = await parts.reader.audit_log(AuditQuery(namespace=namespace, id=row_id, limit=1))
    return R.audit_object(rows[0]) if rows else None


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
            except QueryRejected as exc:  # validation above should have caught it first
                log.info("history query refused by PostgreSQL: %s", exc)
                return status(400, f"a value of the request cannot be used: {exc.__cause__}")
            except StatementTimeout as exc:  # the store is up: this query was too costly
                log.info("history query took too long: %s", exc)
                return status(504, "the query took too long: narrow it with a field selector")
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
        if namespace is not None and not is_namespace_name(namespace):
            return _list_response(request, resource, [], None)  # no object lives there
        page = _revisions if resource == R.REVISIONS else _audit_events
        pieces, next_page = await page(parts, namespace, request)
        return _list_response(request, resource, pieces, next_page)

    async def item(request: web.Request, user: User | None) -> web.StreamResponse:
        assert user is not None
        resource = request.match_info["resource"]
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if resource not in R.RESOURCES:
            raise Refused(404, f'the server could not find the resource "{resource}"')
        await _authorize(parts, user, Access("get", resource, namespace, name, group=R.GROUP))
        obj = await _one(parts, resource, namespace, name)
        if obj is None:
            raise Refused(404, f'{R.RESOURCES[resource].qualified} "{name}" not found')
        return _respond_one(request, resource, obj)

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
