"""List, then watch, one kind of object in every namespace (only those with given labels).

Kopf watches a resource whole and filters per handler in the operator, so an operator that
follows its own ConfigMaps through Kopf receives, parses and briefly holds every ConfigMap (and
every Secret, values included) in the cluster. This informer hands the label selector to the API
server instead, so what the operator receives and holds follows Ferry's objects, not the
cluster's size (issue 15; docs/decisions/0023-cost-follows-ferrys-objects.md).

It is a plain informer, as client-go's: a paginated LIST, every object delivered as ``ADDED``,
then a WATCH from the list's resourceVersion. When the watch's resourceVersion is too old (410
Gone) or the stream fails, it lists again and delivers ``DELETED`` for what disappeared in
between, so a consumer's picture is never left with an object that is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, AsyncClient
from lightkube.types import OnErrorAction, OnErrorResult

logger = logging.getLogger(__name__)

ObjectKey = tuple[str, str]  # (namespace, name)
#: (event type, (namespace, name), object): "ADDED", "MODIFIED" or "DELETED", and the lightkube
#: model — None for an object found gone by a later list (its last state was not seen).
Handler = Callable[[str, ObjectKey, Any | None], None]

#: Objects per LIST request: what is decoded at once while listing. Small when the API server
#: cannot filter (every Deployment of the cluster arrives, to be dropped): the memory a page
#: takes while decoded stays in the process's heap afterwards.
PAGE = 500
UNFILTERED_PAGE = 50
MAX_BACKOFF = 30.0


class Informer:
    """Keep ``handle`` told of every object of ``resource`` labelled ``labels`` (all: ``{}``),
    in every namespace (``"*"``), one, or none (``None``: a cluster-scoped kind), optionally
    narrowed by a field selector (``fields``). The API server ends each watch after
    ``server_timeout`` seconds; it resumes from the last version seen.

    ``synced`` is set once the first list has been delivered: from then on the consumer's
    picture is complete, as Kopf's "indexes filled".
    """

    def __init__(
        self,
        client: AsyncClient,
        resource: Any,
        labels: Mapping[str, str],
        handle: Handler,
        *,
        namespace: str | None = "*",
        fields: Mapping[str, str] | None = None,
        server_timeout: int | None = None,
    ) -> None:
        self._client = client
        self._resource = resource
        self._labels = dict(labels)
        self._handle = handle
        self._namespace = namespace
        self._fields = dict(fields) if fields else None
        self._server_timeout = server_timeout  # None: the API server's own (30 to 60 min)
        self._known: dict[ObjectKey, str] = {}  # (namespace, name) → uid, to see deletions
        self.synced = asyncio.Event()

    @property
    def kind(self) -> str:
        return str(self._resource.__name__)

    @property
    def count(self) -> int:
        """How many objects the informer knows of now."""
        return len(self._known)

    async def run(self) -> None:
        """List and watch until cancelled; failures are retried with backoff, never raised."""
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except (ApiError, httpx.HTTPError) as exc:
                gone = isinstance(exc, ApiError) and exc.status.code == 410
                if not gone:
                    failures += 1
                    logger.warning("watching %ss failed (%s); listing again", self.kind, exc)
                await asyncio.sleep(min(MAX_BACKOFF, 0.5 * 2**failures) if failures else 0)

    async def _list(self) -> str:
        listing = self._client.list(
            self._resource,
            namespace=self._namespace,
            labels=self._labels or None,
            fields=self._fields,
            chunk_size=PAGE if self._labels or self._fields else UNFILTERED_PAGE,
        )
        seen: dict[ObjectKey, str] = {}
        started = time.monotonic()
        async for obj in listing:
            key, uid = _identity(obj)
            seen[key] = uid
            self._tell("ADDED", key, obj)
        # Gone while nobody watched (only after a failed watch; the first list knows nothing):
        # told as deletions, so the consumer drops them too.
        for key in self._known.keys() - seen.keys():
            self._tell("DELETED", key, None)
        self._known = seen
        logger.info("listed %s %s(s) in %.1f s", len(seen), self.kind, time.monotonic() - started)
        self.synced.set()
        return listing.resourceVersion

    async def _watch(self, version: str) -> None:
        # lightkube reconnects by itself when the server ends a watch cleanly, from the last
        # version it saw; a 410 (that version is too old) or any error comes back here to list
        # again, rather than lightkube's restart without a version that would miss deletions.
        stream = self._client.watch(
            self._resource,
            namespace=self._namespace,
            labels=self._labels or None,
            fields=self._fields,
            resource_version=version,
            server_timeout=self._server_timeout,
            on_error=lambda exc, count: OnErrorResult(OnErrorAction.RAISE),
        )
        async for event, obj in stream:
            key, uid = _identity(obj)
            if event == "DELETED":
                self._known.pop(key, None)
            else:
                self._known[key] = uid
            self._tell(event, key, obj)

    def _tell(self, event: str, key: ObjectKey, obj: Any | None) -> None:
        """Hand one event to the consumer. One object it cannot take (a bug it meets, or content
        no one foresaw: a Secret anyone labelled as Ferry's, holding bytes that are not text) is
        skipped and logged, until it changes: letting the error end the informer would stop the
        index, and with it readiness and reconciling, for every tenant. Only where it failed is
        logged, never the error's message, which may quote the object's data (a Secret's)."""
        try:
            self._handle(event, key, obj)
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            logger.error(
                "%s %s/%s could not be indexed (%s at %s:%s); skipped until it changes",
                self.kind,
                *key,
                type(exc).__name__,
                frame.filename,
                frame.lineno,
            )


def _identity(obj: Any) -> tuple[ObjectKey, str]:
    """(namespace, name) and uid; a cluster-scoped object's namespace is "None". Read once:
    a generic resource (Ferry's kinds) decodes ``metadata`` anew at each access."""
    meta = obj.metadata
    return (str(meta.namespace), str(meta.name)), str(meta.uid)
