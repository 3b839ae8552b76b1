"""``GET /v1/configs/{namespace}/{name}``: a ConfigEntry's rendered configuration.

Read from Redis (what the operator cached when it materialised the entry); when Redis is down or
lacks the key, from PostgreSQL: the entry's latest revision, rendered again with the format
recorded with it (``domain.render``, the same function that rendered the ConfigMap), unless a
deletion was recorded after it. Either way the body is the same document, and the header
``X-Ferry-Source`` says which one answered.

``ETag`` is ``"<content hash>:<format>"``: the hash is the entry's ``status.hash`` (and the
ConfigMap's ``ferry.dev/hash``), the format is there because a change of ``target.format`` alone
changes the rendering but not the content. ``If-None-Match`` with it answers 304.

A configuration found in neither (or deleted) is remembered as absent for
:data:`ABSENT_SECONDS`, dropped sooner when its change arrives on the stream (as the mirror of
documents is), so a client asking again and again for a missing one is not a PostgreSQL query
each time.

Whom it trusts: the caller's token (TokenReview) and RBAC ``get`` on that ConfigEntry (a
SubjectAccessReview naming it), before anything is read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ferry.adapters.cache import CONFIG_EVENT, Cache, CacheUnavailable
from ferry.adapters.kube_auth import Access
from ferry.adapters.postgres import Revision, StoreUnavailable
from ferry.adapters.postgres.latest import LatestReader
from ferry.api import metrics
from ferry.api.guard import Guard, Refused, status_response
from ferry.api.watch import Mirror
from ferry.domain import kinds
from ferry.domain.entry import DEFAULT_FORMAT
from ferry.domain.errors import Invalid
from ferry.domain.render import render

RESOURCE = kinds.CONFIG_ENTRY.plural

#: Seconds a configuration found in neither Redis nor PostgreSQL is answered 404 from memory.
#: Its creation reaches the stream and ends that sooner; the bound is for a write that reached
#: PostgreSQL but not yet Redis (the operator retries it), which a read would otherwise find.
ABSENT_SECONDS = 5.0


def etag(document: Mapping[str, Any]) -> str:
    return f'"{document.get("hash")}:{document.get("format")}"'


def if_none_match(request: web.Request, tag: str) -> bool:
    """Whether the request's ``If-None-Match`` names ``tag`` (or ``*``)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    candidates = {item.strip().removeprefix("W/") for item in header.split(",")}
    return "*" in candidates or tag in candidates


def document_from_revision(row: Revision) -> dict[str, Any]:
    """What the operator caches for an entry, rebuilt from its recorded revision."""
    spec = row.spec if isinstance(row.spec, Mapping) else {}
    target = spec.get("target")
    fmt = (
        str(target.get("format") or DEFAULT_FORMAT)
        if isinstance(target, Mapping)
        else DEFAULT_FORMAT
    )
    data = row.content
    if (
        spec.get("secretData") is not None
        and isinstance(data, Mapping)
        and set(data) == {"data", "secrets"}
    ):
        data = data["data"]  # a revision with secrets records their references beside the data
    return {
        "namespace": row.namespace,
        "name": row.name,
        "revision": row.revision,
        "hash": row.hash,
        "format": fmt,
        "data": data,
        "rendered": render(data, fmt),
    }


@dataclass
class ConfigSource:
    cache: Cache
    reader: LatestReader
    mirror: Mirror | None = None
    absent: Mirror | None = None
    """Keys found in neither store: the time (monotonic) until which that answer stands."""

    async def read(self, namespace: str, name: str) -> tuple[str, dict[str, Any] | None, str]:
        """(source, document, its JSON text): the source is ``redis`` or ``postgres``; the
        document None when neither has the entry. Raises :class:`StoreUnavailable` when Redis
        could not answer and PostgreSQL cannot either."""
        key = (CONFIG_EVENT, namespace, name)
        if self.mirror is not None and (kept := self.mirror.get(key)) is not None:
            metrics.child(metrics.SOURCE, "config", "redis").inc()
            return "redis", kept[0], kept[1]
        if self._known_absent(key):
            metrics.child(metrics.SOURCE, "config", "absent").inc()
            return "postgres", None, "null"
        redis_error: CacheUnavailable | None = None
        mirror = self.mirror or self.absent
        generation = mirror.hub.generation if mirror is not None else 0
        try:
            raw = await self.cache.get_raw(namespace, name)
        except CacheUnavailable as exc:
            raw, redis_error = None, exc
        if raw is not None:
            metrics.child(metrics.SOURCE, "config", "redis").inc()
            document = dict(json.loads(raw))
            if self.mirror is not None:
                self.mirror.put(key, (document, raw), generation)
            return "redis", document, raw
        try:
            row = await self.reader.latest(kinds.CONFIG_ENTRY.kind, namespace, name)
        except StoreUnavailable as exc:
            if redis_error is not None:
                raise StoreUnavailable(f"{redis_error}; {exc}") from exc
            raise
        metrics.child(metrics.SOURCE, "config", "postgres").inc()
        try:
            document = None if row is None else document_from_revision(row)
        except Invalid:  # a recorded revision renders (it did when recorded); be safe anyway
            document = None
        if row is None and redis_error is None and self.absent is not None:
            # Absent from both (not merely Redis down): remember it, unless a change arrived
            # meanwhile (the generation moved: it may be this very entry's creation).
            self.absent.put(key, time.monotonic() + ABSENT_SECONDS, generation)
        return "postgres", document, json.dumps(document, ensure_ascii=False)

    def _known_absent(self, key: tuple[str, str, str]) -> bool:
        until = self.absent.get(key) if self.absent is not None else None
        return until is not None and until > time.monotonic()


def add_routes(app: web.Application, guard: Guard, source: ConfigSource) -> None:
    async def get_config(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        try:
            await guard.require(request, Access("get", RESOURCE, namespace, name))
        except Refused as refused:
            return refused.response
        try:
            where, document, text = await source.read(namespace, name)
        except StoreUnavailable:
            return status_response(
                503, "configuration is unavailable: neither Redis nor PostgreSQL answered"
            )
        if document is None:
            return status_response(
                404,
                f"ConfigEntry {namespace}/{name} has no served configuration",
                group=kinds.GROUP,
                kind=RESOURCE,
                name=name,
            )
        tag = etag(document)
        headers = {"ETag": tag, "X-Ferry-Source": where, "Cache-Control": "no-cache"}
        if if_none_match(request, tag):
            return web.Response(status=304, headers=headers)
        return web.Response(text=text, content_type="application/json", headers=headers)

    app.router.add_get("/v1/configs/{namespace}/{name}", get_config)
