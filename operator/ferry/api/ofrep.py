"""OpenFeature Remote Evaluation Protocol (OFREP): Ferry's flags for any OpenFeature SDK.

``POST /ofrep/v1/evaluate/flags/{key}`` and the bulk ``POST /ofrep/v1/evaluate/flags``, shaped
as open-feature/protocol's ``service/openapi.yaml`` (v0.3.0) says, answered by the evaluator
``ferry flags eval`` uses (``domain.flags.evaluate`` with the flag's bucketing generation).

Which flags: those *served* in the namespace, i.e. what its ``ferry-flags`` ConfigMap holds
(its own flags and those other namespaces publish there). The namespace is the header
``X-Ferry-Namespace``, or else the namespace of the caller's service account.

Where from: the operator caches each namespace's served document in Redis (``put_flags``): its
listing names, per flag key, the FeatureFlag and the recorded revision served. The flag at that
revision is read once from PostgreSQL (a revision never changes) and kept parsed in memory.
Redis down, or without the namespace's document: PostgreSQL alone, which knows the namespace's
own flags (latest revisions, those that target their own namespace) but not what other
namespaces publish into it.

Bucketing: the generation the listing records for the flag when the operator writes it;
otherwise ``spec.bucketing`` as recorded with the revision, else the ``--flags-default-bucketing``
setting (the value a new flag's ``status.bucketing`` gets).

Whom it trusts: the caller's token and RBAC ``get`` on ``featureflags`` in the namespace (naming
the flag for a single evaluation). The context only chooses an answer; nothing a caller sends
changes what others are served.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ferry import metrics as operator_metrics
from ferry.adapters.cache import FLAGS_EVENT, Cache, CacheUnavailable
from ferry.adapters.kube_auth import Access, User
from ferry.adapters.postgres import Revision, StoreUnavailable
from ferry.adapters.postgres.latest import LatestReader
from ferry.api import metrics
from ferry.api.configs import if_none_match
from ferry.api.guard import Guard, Refused, status_response
from ferry.api.watch import Mirror
from ferry.domain import kinds
from ferry.domain.errors import Invalid
from ferry.domain.flags import Evaluation, Flag, Reason, bucketing_for, evaluate, parse_flag
from ferry.domain.flags.bucketing import GENERATIONS
from ferry.domain.targets import desired_namespaces

logger = logging.getLogger(__name__)

NAMESPACE_HEADER = "X-Ferry-Namespace"
RESOURCE = kinds.FEATURE_FLAG.plural
KIND = kinds.FEATURE_FLAG.kind

#: Seconds a request body (at most 256 KiB: ``server.MAX_BODY_BYTES``) may take to arrive once
#: the headers have; a client that sends it slowly or never gets 408. (aiohttp reads a body with
#: no time limit.) Would be the setting ``serve.body_timeout_seconds``.
BODY_SECONDS = 10.0


@dataclass(frozen=True)
class ServedFlag:
    flag: Flag
    bucketing: str
    revision: int


@dataclass(frozen=True)
class Served:
    flags: Mapping[str, ServedFlag]
    source: str  # redis | postgres


class FlagSource:
    """The flags served in a namespace, parsed once per revision."""

    def __init__(
        self,
        cache: Cache,
        reader: LatestReader,
        default_bucketing: str,
        *,
        mirror: Mirror | None = None,
        max_entries: int = 4096,
    ) -> None:
        self.mirror = mirror
        self.cache = cache
        self.reader = reader
        self.default_bucketing = default_bucketing
        self._max = max_entries
        # (namespace, name, revision, hash) → (flag, recorded spec): a revision never changes
        self._definitions: OrderedDict[tuple[str, str, int, str], tuple[Flag, Any]] = OrderedDict()
        # namespace → (the Redis document's text, what it serves)
        self._documents: OrderedDict[str, tuple[str, Served]] = OrderedDict()

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._max:
            cache.popitem(last=False)

    def _bucketing(self, recorded: Any, spec: Any) -> str:
        if isinstance(recorded, str) and recorded in GENERATIONS:
            return recorded
        spec = spec if isinstance(spec, Mapping) else {}
        return str(bucketing_for(spec, None, self.default_bucketing))

    async def _definition(
        self, namespace: str, name: str, revision: int, digest: str
    ) -> tuple[Flag, Any] | None:
        key = (namespace, name, revision, digest)
        if (known := self._definitions.get(key)) is not None:
            return known
        row = await self.reader.revision(KIND, namespace, name, revision)
        if row is None or row.hash != digest:
            return None
        found = self._parse(row)
        if found is not None:
            self._remember(self._definitions, key, found)
        return found

    @staticmethod
    def _parse(row: Revision) -> tuple[Flag, Any] | None:
        try:
            return parse_flag(row.name, row.content), row.spec
        except Invalid:  # recorded revisions are valid; an old one under newer rules may not be
            logger.warning(
                "revision %s of %s/%s no longer parses", row.revision, row.namespace, row.name
            )
            return None

    async def served(self, namespace: str) -> Served:
        """Raises :class:`StoreUnavailable` when neither Redis nor PostgreSQL can answer."""
        key = (FLAGS_EVENT, namespace, None)
        if self.mirror is not None and (kept := self.mirror.get(key)) is not None:
            metrics.child(metrics.SOURCE, "flags", "redis").inc()
            return kept  # type: ignore[no-any-return]
        redis_error: CacheUnavailable | None = None
        generation = self.mirror.hub.generation if self.mirror is not None else 0
        try:
            raw = await self.cache.get_flags_raw(namespace)
        except CacheUnavailable as exc:
            raw, redis_error = None, exc
        if raw is not None:
            served = await self._from_redis(namespace, raw)
            if self.mirror is not None:
                self.mirror.put(key, served, generation)
            return served
        return await self._from_postgres(namespace, redis_error)

    async def _from_redis(self, namespace: str, raw: str) -> Served:
        known = self._documents.get(namespace)
        if known is not None and known[0] == raw:
            metrics.child(metrics.SOURCE, "flags", "redis").inc()
            return known[1]
        served = await self._from_listing(json.loads(raw))
        self._remember(self._documents, namespace, (raw, served))
        metrics.child(metrics.SOURCE, "flags", "redis").inc()
        return served

    async def _from_postgres(self, namespace: str, redis_error: CacheUnavailable | None) -> Served:
        try:
            rows = await self.reader.latest_in_namespace(KIND, namespace)
        except StoreUnavailable as exc:
            if redis_error is not None:
                raise StoreUnavailable(f"{redis_error}; {exc}") from exc
            raise
        metrics.child(metrics.SOURCE, "flags", "postgres").inc()
        flags: dict[str, ServedFlag] = {}
        for row in rows:
            spec = row.spec if isinstance(row.spec, Mapping) else {}
            if namespace not in desired_namespaces(namespace, spec.get("target"), ()).accepted:
                continue  # a flag published elsewhere only
            parsed = self._parse(row)
            if parsed is not None:
                flags[row.name] = ServedFlag(
                    parsed[0], self._bucketing(None, parsed[1]), row.revision
                )
        return Served(flags, "postgres")

    async def _from_listing(self, document: Mapping[str, Any]) -> Served:
        listing = document.get("flags")
        flags: dict[str, ServedFlag] = {}
        for key, source in (listing if isinstance(listing, Mapping) else {}).items():
            if not isinstance(source, Mapping):
                continue
            revision, digest = source.get("revision"), source.get("hash")
            if not isinstance(revision, int) or not isinstance(digest, str):
                continue
            found = await self._definition(
                str(source.get("namespace")), str(source.get("name")), revision, digest
            )
            if found is None:
                continue
            flag, spec = found
            if flag.key != key:
                continue  # the listing keys flags by name; never serve one under another key
            flags[key] = ServedFlag(flag, self._bucketing(source.get("bucketing"), spec), revision)
        return Served(flags, "redis")


# ----------------------------------------------------------------------------- protocol
class BadRequest(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


async def read_context(request: web.Request) -> tuple[str | None, dict[str, Any]]:
    """(targeting key, the other attributes) from an OFREP request body.

    A missing body or ``context`` is an empty context (the OFREP providers send none when the
    app set none). ``PARSE_ERROR`` for a body that is not JSON (or nested deeper than the parser
    recurses), ``INVALID_CONTEXT`` for a context that is not an object or a targeting key that
    is not a string; :class:`Refused` with 408 for a body that does not arrive in time.
    """
    try:
        async with asyncio.timeout(BODY_SECONDS):
            raw = await request.read()
    except TimeoutError:
        raise Refused(
            status_response(408, f"the request body did not arrive within {BODY_SECONDS:g} s")
        ) from None
    if not raw.strip():
        return None, {}
    try:
        body = json.loads(raw)  # bytes: UTF-8 (or -16/-32), as RFC 8259 allows
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest("PARSE_ERROR", f"the request body is not JSON: {exc}") from None
    except RecursionError:  # valid JSON perhaps, but nested deeper than the parser goes
        raise BadRequest("PARSE_ERROR", "the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("INVALID_CONTEXT", "the request body must be a JSON object")
    context = body.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise BadRequest("INVALID_CONTEXT", "'context' must be a JSON object")
    attributes = dict(context)
    targeting_key = attributes.pop("targetingKey", None)
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise BadRequest("INVALID_CONTEXT", "'context.targetingKey' must be a string")
    return targeting_key, attributes


def answer(key: str, served: ServedFlag, evaluation: Evaluation) -> tuple[bool, dict[str, Any]]:
    """(success, the OFREP object): an ``evaluationSuccess`` or an ``evaluationFailure``.

    A disabled flag has no variant or value: the ``codeDefaultFlag`` form (OFREP ADR 0006), so
    the app uses its code default, as flagd's providers do.
    """
    metadata = {"revision": served.revision, "bucketing": served.bucketing}
    if evaluation.reason == Reason.ERROR:
        code = str(evaluation.error_code or "GENERAL")
        return False, {
            "key": key,
            "errorCode": code,
            "errorDetails": f"flag {key!r} could not be evaluated for this context ({code})",
            "metadata": metadata,
        }
    out: dict[str, Any] = {"key": key, "reason": str(evaluation.reason)}
    if evaluation.variant is not None:
        out["variant"] = evaluation.variant
        out["value"] = evaluation.value
    out["metadata"] = metadata
    return True, out


def _failure(status: int, code: str, details: str, key: str | None = None) -> web.Response:
    body: dict[str, Any] = {"errorCode": code, "errorDetails": details}
    if key is not None:
        body = {"key": key, **body}
    return web.json_response(body, status=status)


def add_routes(
    app: web.Application, guard: Guard, source: FlagSource, series: metrics.FlagSeries
) -> None:
    def counted(namespace: str, key: str, evaluation: Evaluation) -> Evaluation:
        flag, variant = series.labels(namespace, key, evaluation.variant)
        reason = str(evaluation.reason)
        metrics.child(operator_metrics.FLAG_EVALUATIONS, flag, variant, reason).inc()
        return evaluation

    async def namespace_of(request: web.Request, user: User) -> str:
        namespace = request.headers.get(NAMESPACE_HEADER) or user.service_account_namespace
        if not namespace:
            raise Refused(
                status_response(
                    400,
                    f"no flag namespace: send the header {NAMESPACE_HEADER}, or call with a "
                    "service-account token (its namespace is used)",
                )
            )
        return namespace

    async def served_or_503(namespace: str) -> Served | web.Response:
        try:
            return await source.served(namespace)
        except StoreUnavailable:
            return status_response(
                503, "flags are unavailable: neither Redis nor PostgreSQL answered"
            )

    async def evaluate_one(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            user = await guard.user(request)
            namespace = await namespace_of(request, user)
            await guard.require(request, Access("get", RESOURCE, namespace, key), user)
            targeting_key, attributes = await read_context(request)
        except Refused as refused:
            return refused.response
        except BadRequest as bad:
            return _failure(400, bad.code, bad.details, key)
        served = await served_or_503(namespace)
        if isinstance(served, web.Response):
            return served
        flag = served.flags.get(key)
        if flag is None:
            return _failure(
                404, "FLAG_NOT_FOUND", f"flag {key!r} is not served in namespace {namespace}", key
            )
        evaluation = evaluate(flag.flag, targeting_key, attributes, flag.bucketing)
        ok, body = answer(key, flag, counted(namespace, key, evaluation))
        return web.json_response(body, status=200 if ok else 400)

    async def evaluate_all(request: web.Request) -> web.Response:
        try:
            user = await guard.user(request)
            namespace = await namespace_of(request, user)
            await guard.require(request, Access("get", RESOURCE, namespace), user)
            targeting_key, attributes = await read_context(request)
        except Refused as refused:
            return refused.response
        except BadRequest as bad:
            return _failure(400, bad.code, bad.details)
        served = await served_or_503(namespace)
        if isinstance(served, web.Response):
            return served
        items = []
        for key, f in sorted(served.flags.items()):
            evaluation = evaluate(f.flag, targeting_key, attributes, f.bucketing)
            items.append(answer(key, f, counted(namespace, key, evaluation))[1])
        text = json.dumps({"flags": items}, ensure_ascii=False, separators=(",", ":"))
        tag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
        headers = {"ETag": tag, "X-Ferry-Source": served.source}
        if if_none_match(request, tag):
            return web.Response(status=304, headers=headers)
        return web.Response(text=text, content_type="application/json", headers=headers)

    app.router.add_post("/ofrep/v1/evaluate/flags/{key}", evaluate_one)
    app.router.add_post("/ofrep/v1/evaluate/flags", evaluate_all)
