"""What each webhook answers: a few lines per hook over :mod:`ferry.domain.admission`.

:class:`Admission` turns one AdmissionReview into its response. It runs on the admission
thread's event loop (:mod:`ferry.webhooks.thread`), never on the loop that reconciles, with its
own Kubernetes client and its own validation workers; only the picture of the cluster (the
indexes in :class:`~ferry.reconcile.world.World`) is shared with the reconcilers.

The specs a check needs come from those indexes (no I/O in the usual case); a refusal is
confirmed against the API server's own objects before it is given (the index trails them by a
watch event: it may not have heard of a schema or base yet, or hold an older version), within
:data:`LIVE_READS` reads and :data:`LIVE_READS_SECONDS`. A call has no side effects
(``sideEffects: None``): nothing is written anywhere, not even to the audit trail, because the
request's content (namespace, name, user) is only as trustworthy as its sender. Refusals reach
the audit trail from the reconciler. Schema checks and data validation run in a worker process
(``ferry.reconcile.isolation``), except entry checks whose cost is bounded in advance, which
this thread answers itself (decision 0027); every check is answered within
:data:`ANSWER_SECONDS`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Namespace

from ferry.adapters.kube import KINDS
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.admission import (
    check_flag,
    denial_message,
    identity,
    is_checked,
    next_to_read,
    stamp,
)
from ferry.domain.errors import Violation
from ferry.domain.secrets import allowed_prefixes
from ferry.reconcile import isolation
from ferry.reconcile.world import NamespaceSpecs, World
from ferry.settings import VaultSettings
from ferry.webhooks.configurations import (
    BY_PATH,
    TIMEOUT_SECONDS,
    VALIDATE_ENTRY,
    VALIDATE_FLAG,
    VALIDATE_SCHEMA,
)
from ferry.webhooks.server import denial, note_denial

logger = logging.getLogger(__name__)

#: Schemas and bases the entry webhook may read live before refusing (the index may lag) ...
LIVE_READS = 16
#: ... and the time all of them together may take: well inside the webhook's 5 s timeout.
LIVE_READS_SECONDS = 2.0
#: Every check is answered within this, live reads and validation (in a worker process, see
#: ``ferry.reconcile.isolation``) included: the rest of the API server's ``timeoutSeconds`` is
#: left for the way back, so a slow check is a clear denial, never "context deadline exceeded".
ANSWER_SECONDS = TIMEOUT_SECONDS - 1.0
#: How often a check is run again when the reconcile thread changed an index while it was read.
INDEX_RETRIES = 3


@dataclass(frozen=True)
class Request:
    """The parts of an AdmissionReview request the checks read."""

    operation: str | None
    namespace: str
    name: str
    new: Mapping[str, Any] | None
    old: Mapping[str, Any] | None
    username: str

    @classmethod
    def parse(cls, part: Mapping[str, Any]) -> Request:
        new, old = part.get("object"), part.get("oldObject")
        namespace, name = identity(new if isinstance(new, Mapping) else old)
        user = part.get("userInfo") or {}
        return cls(
            operation=part.get("operation"),
            namespace=namespace or str(part.get("namespace") or ""),
            name=name or str(part.get("name") or ""),
            new=new if isinstance(new, Mapping) else None,
            old=old if isinstance(old, Mapping) else None,
            username=str(user.get("username") or "") if isinstance(user, Mapping) else "",
        )

    @property
    def spec(self) -> Any:
        return (self.new or {}).get("spec")

    @property
    def checked(self) -> bool:
        return is_checked(self.operation, self.old, self.new)


@dataclass
class Admission:
    """Answers the webhooks (see the module docstring). ``client`` and ``pool`` belong to the
    loop it runs on; ``world`` is read, never written."""

    world: World
    vault: VaultSettings
    client: AsyncClient | None = None
    pool: isolation.Isolation | None = None

    def __post_init__(self) -> None:
        self._checks: dict[str, Callable[[Request, float], Awaitable[list[Violation]]]] = {
            VALIDATE_ENTRY.path: self.validate_entry,
            VALIDATE_SCHEMA.path: self.validate_schema,
            VALIDATE_FLAG.path: self.validate_flag,
        }

    async def __call__(
        self, review: Mapping[str, Any], *, webhook: str, **_: Any
    ) -> dict[str, Any]:
        """The AdmissionReview response to ``review`` for the hook served at ``webhook``
        (the signature :class:`~ferry.webhooks.server.WebhookServer` calls)."""
        part = review["request"]
        hook = BY_PATH[webhook]
        request = Request.parse(part)
        api_version = review.get("apiVersion", "admission.k8s.io/v1")
        response: dict[str, Any] = {"uid": part["uid"], "allowed": True}
        if hook.mutating:
            if ops := stamp_patch(request, now()):
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        elif request.checked and (violations := await self._check(self._checks[webhook], request)):
            note_denial(violations)
            kind, namespace, name = hook.kind.kind, request.namespace, request.name
            logger.info("denied %s %s/%s: %d violation(s)", kind, namespace, name, len(violations))
            return denial(
                part["uid"], denial_message(kind, namespace, name, violations), api_version
            )
        return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}

    async def _check(
        self, check: Callable[[Request, float], Awaitable[list[Violation]]], request: Request
    ) -> list[Violation]:
        """Run ``check`` by the request's deadline. The indexes are Kopf's, filled on the
        reconcile thread: each read is one dictionary lookup, or a copy, but a namespace's
        entries are listed by iterating, which a concurrent insert interrupts. Checks are pure,
        so one interrupted that way is simply run again. (Anything else that fails becomes a
        denial naming the object in :class:`~ferry.webhooks.server.WebhookServer`.)"""
        deadline = asyncio.get_running_loop().time() + ANSWER_SECONDS
        for _ in range(INDEX_RETRIES - 1):
            try:
                return await check(request, deadline)
            except RuntimeError as error:
                if "changed size during iteration" not in str(error):
                    raise
        return await check(request, deadline)

    async def validate_entry(self, request: Request, deadline: float) -> list[Violation]:
        """ConfigEntry: what the reconciler would refuse (see ``check_entry``), refused now.

        The indexes trail the API server by a watch event, and ``kubectl apply -f`` of a schema
        (or a base, or a namespace's ``ferry.dev/vault-paths``) and the entry that needs it sends
        them milliseconds apart: what the index has not heard of yet, or still holds in an older
        version. So a refusal is given only if it still holds against the API server's own
        objects (:meth:`_read_used`). An accepted request reads nothing.
        """
        namespace, name, spec = request.namespace, request.name, request.spec
        entries = self.world.entry_specs(namespace)
        schemas = self.world.schema_specs(namespace)
        annotation = self.world.namespace_annotations(namespace).get(L.VAULT_PATHS)
        violations = await self._check_entry(request, entries, schemas, annotation, deadline)
        if violations and isinstance(spec, Mapping) and self.client is not None:
            read, annotation = await self._read_used(
                namespace, name, spec, entries, schemas, annotation
            )
            if read:  # the refusal stands only if it holds against what is stored
                violations = await self._check_entry(
                    request, entries, schemas, annotation, deadline
                )
        return violations

    async def validate_schema(self, request: Request, deadline: float) -> list[Violation]:
        """ConfigSchema: a usable schema, and with ``Backward`` no entry that is valid today
        broken. As for entries, a refusal is confirmed against the API server's own entries
        (one list of the namespace's): a GitOps sync that fixes an entry and tightens its
        schema sends the two milliseconds apart, and the index may still hold the old entry."""
        entries: Mapping[str, Mapping[str, Any]] = self.world.entry_specs(request.namespace)
        violations = await self._check_schema(request, entries, deadline)
        if violations and request.operation == "UPDATE" and self.client is not None:
            # Checked again whatever the list says: compared with the index now, it could look
            # the same as what the first check saw only because the index caught up meanwhile.
            stored = await self._list_entries(request.namespace)
            if stored is not None:
                violations = await self._check_schema(request, stored, deadline)
        return violations

    async def validate_flag(self, request: Request, deadline: float) -> list[Violation]:
        """FeatureFlag: variants, default, rules and splits as ``check_flag`` (and flagd) need."""
        return check_flag(request.spec)

    async def _check_entry(
        self,
        request: Request,
        entries: NamespaceSpecs,
        schemas: NamespaceSpecs,
        vault_paths_annotation: str | None,
        deadline: float,
    ) -> list[Violation]:
        namespace = request.namespace
        vault_paths = (  # no Vault: no secretData (the reconciler would refuse it too)
            allowed_prefixes(namespace, vault_paths_annotation, self.vault.allowed_path_prefixes)
            if self.vault.address
            else ()
        )
        return await isolation.check_entry(
            namespace,
            request.name,
            request.spec,
            entries,
            schemas,
            vault_paths=vault_paths,
            min_refresh=self.vault.min_refresh_seconds,
            deadline=deadline,
            pool=self.pool,
        )

    async def _check_schema(
        self, request: Request, entries: Mapping[str, Mapping[str, Any]], deadline: float
    ) -> list[Violation]:
        old_spec = request.old.get("spec") if request.old is not None else None
        return await isolation.check_schema_request(
            request.operation,
            request.namespace,
            request.name,
            request.spec,
            old_spec,
            entries,
            deadline=deadline,
            pool=self.pool,
        )

    async def _list_entries(self, namespace: str) -> dict[str, Mapping[str, Any]] | None:
        """The namespace's ConfigEntries' specs as the API server stores them (None: could not
        be listed within :data:`LIVE_READS_SECONDS`)."""
        assert self.client is not None
        found: dict[str, Mapping[str, Any]] = {}
        try:
            async with asyncio.timeout(LIVE_READS_SECONDS):
                async for obj in self.client.list(
                    KINDS[kinds.CONFIG_ENTRY.kind], namespace=namespace
                ):
                    spec, meta = obj.get("spec"), obj.get("metadata") or {}
                    if isinstance(spec, Mapping) and isinstance(meta.get("name"), str):
                        found[meta["name"]] = spec
        except (ApiError, TimeoutError) as error:
            logger.warning("admission: could not list entries in %s: %r", namespace, error)
            return None
        return found

    async def _read_used(
        self,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        entries: NamespaceSpecs,
        schemas: NamespaceSpecs,
        annotation: str | None,
    ) -> tuple[bool, str | None]:
        """Read live what refusing ``spec`` rests on: its schema and its bases (those the stored
        bases name too: :func:`next_to_read`), and (with Vault and secretData) the namespace's
        ``ferry.dev/vault-paths``. What was read is put into ``entries``/``schemas``, and what
        is gone taken out of them (views: the index itself is never written). Returns whether
        anything was read, and the annotation as read. Within :data:`LIVE_READS` reads of
        schemas and bases and :data:`LIVE_READS_SECONDS` in all; what cannot be read in time
        stays as the index has it.

        Whether something was read, not whether it differs from the index: the index may have
        caught up since the check that refused, and then looks like what was read although the
        check saw it older, or not at all.
        """
        assert self.client is not None
        read: set[tuple[str, str]] = set()
        found_any = False
        try:
            async with asyncio.timeout(LIVE_READS_SECONDS):
                while len(read) < LIVE_READS:
                    wanted = next_to_read(name, spec, entries, read)
                    if wanted is None:
                        break
                    kind, ref = wanted
                    read.add((kind.kind, ref))
                    view = schemas if kind == kinds.CONFIG_SCHEMA else entries
                    try:
                        obj = await self.client.get(KINDS[kind.kind], ref, namespace=namespace)
                    except ApiError as error:
                        if error.status.code == 404:
                            found_any = True
                            if ref in view:
                                del view[ref]  # deleted since the index heard of it
                        continue
                    stored = obj.get("spec") if isinstance(obj, Mapping) else None
                    if isinstance(stored, Mapping):
                        view[ref] = stored
                        found_any = True
                if self.vault.address and spec.get("secretData") is not None:
                    live = await self.client.get(Namespace, namespace)
                    meta = live.metadata
                    annotation = (meta.annotations or {}).get(L.VAULT_PATHS) if meta else None
                    found_any = True
        except (ApiError, TimeoutError) as error:
            logger.warning("admission: could not confirm a refusal in %s: %r", namespace, error)
        return found_any, annotation


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_patch(request: Request, at: str) -> list[dict[str, Any]]:
    """The JSON Patch that records who changed the content and when (the revision history reads
    it), and stores a new object with Ferry's finalizer; ``[]``: nothing to change."""
    change = stamp(request.operation, request.old, request.new, request.username, at)
    meta = (request.new or {}).get("metadata") or {}
    present = meta.get("annotations")
    ops: list[dict[str, Any]] = []
    if not isinstance(present, Mapping):
        if added := {k: v for k, v in change.annotations.items() if v is not None}:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": added})
    else:
        for key, value in change.annotations.items():
            path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
            if value is not None:
                ops.append({"op": "add", "path": path, "value": value})
            elif key in present:
                ops.append({"op": "remove", "path": path})
    if change.finalizers is not None:
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": change.finalizers})
    return ops
