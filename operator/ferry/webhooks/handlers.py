"""Kopf's admission handlers: each a few lines over :mod:`ferry.domain.admission`.

The specs a check needs come from the Kopf indexes (no I/O in the usual case); only a schema or
base the index has not heard of yet is read live, within :data:`LIVE_READS` reads and
:data:`LIVE_READS_SECONDS` in all. A call has no side effects (``sideEffects: None``): nothing is
written anywhere, not even to the audit trail, because the request's content (namespace, name,
user) is only as trustworthy as its sender. Refusals reach the audit trail from the reconciler.
Schema checks and data validation run in a worker process (``ferry.reconcile.isolation``), never
on the event loop, and every check is answered within :data:`ANSWER_SECONDS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from lightkube import ApiError, AsyncClient

from ferry.adapters.kube import KINDS
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.admission import (
    NESTED_TOO_DEEPLY,
    check_flag,
    denial_message,
    identity,
    is_checked,
    next_unresolved,
    stamp,
)
from ferry.domain.errors import Violation
from ferry.domain.secrets import allowed_prefixes
from ferry.reconcile import isolation
from ferry.reconcile.world import NamespaceSpecs
from ferry.webhooks.configurations import (
    OPERATIONS,
    STAMP_ENTRY,
    STAMP_FLAG,
    TIMEOUT_SECONDS,
    VALIDATE_ENTRY,
    VALIDATE_FLAG,
    VALIDATE_SCHEMA,
    Hook,
)
from ferry.webhooks.server import DENIED_CODE, note_denial

logger = logging.getLogger(__name__)

#: References the entry webhook may read live when the index has not caught up yet ...
LIVE_READS = 16
#: ... and the time all of them together may take: well inside the webhook's 5 s timeout.
LIVE_READS_SECONDS = 2.0
#: Every check is answered within this, live reads and validation (in a worker process, see
#: ``ferry.reconcile.isolation``) included: the rest of the API server's ``timeoutSeconds`` is
#: left for the way back, so a slow check is a clear denial, never "context deadline exceeded".
ANSWER_SECONDS = TIMEOUT_SECONDS - 1.0

Handler = Callable[..., Awaitable[None]]


def _deny(kind: str, namespace: str, name: str, violations: list[Violation]) -> None:
    if violations:
        note_denial(violations)
        logger.info("denied %s %s/%s: %d violation(s)", kind, namespace, name, len(violations))
        raise kopf.AdmissionError(denial_message(kind, namespace, name, violations), DENIED_CODE)


class DenialsAreNotErrors(logging.Filter):
    """Kopf logs every refused request as a failed handler at ERROR; a denial is the webhook
    working, so those lines are dropped (``_deny`` logs one INFO line instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Webhook '") and "failed permanently" in text)


def _answers(hook: Hook) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``hook`` and turn anything unexpected into a denial naming the
    object: with ``failurePolicy: Fail`` an error refuses the write as well, but says nothing
    useful to the user."""
    register = kopf.on.mutate if hook.mutating else kopf.on.validate

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def answered(**kwargs: Any) -> None:
            try:
                await handler(**kwargs)
            except kopf.AdmissionError:
                raise
            except RecursionError:
                namespace, name = identity(kwargs.get("body"))
                _deny(hook.kind.kind, namespace, name, [Violation("spec", NESTED_TOO_DEEPLY)])
            except Exception as error:
                logger.exception("admission check failed")
                namespace, name = identity(kwargs.get("body"))
                violation = Violation("spec", f"could not be checked: {error}"[:500])
                _deny(hook.kind.kind, namespace, name, [violation])

        register(kinds.GROUP, kinds.VERSION, hook.kind.plural, id=hook.path, operations=OPERATIONS)(
            answered
        )
        return answered

    return decorate


def _deadline() -> float:
    """When the check being answered must be done by, on the event loop's clock."""
    return asyncio.get_running_loop().time() + ANSWER_SECONDS


def _client(memo: Any) -> AsyncClient | None:
    runtime = memo.get("runtime") if isinstance(memo, Mapping) else None
    return runtime.kube.client if runtime is not None else None


async def _read_unresolved(
    client: AsyncClient | None,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    entries: NamespaceSpecs,
    schemas: NamespaceSpecs,
) -> None:
    """Add to ``entries``/``schemas`` what :func:`next_unresolved` names and the API server has.

    ``kubectl apply -f`` of a schema and an entry in one file sends them milliseconds apart; the
    watch feeding the index may lag behind, and "schema not found" for a schema that was just
    created would be wrong. Only misses are read, so the usual request does no I/O at all.
    """
    if client is None:
        return
    tried: set[tuple[str, str]] = set()
    try:
        async with asyncio.timeout(LIVE_READS_SECONDS):
            while len(tried) < LIVE_READS:
                wanted = next_unresolved(name, spec, entries, schemas, tried)
                if wanted is None:
                    return
                kind, ref = wanted
                tried.add((kind.kind, ref))
                try:
                    obj = await client.get(KINDS[kind.kind], ref, namespace=namespace)
                except ApiError:
                    continue
                found = obj.get("spec") if isinstance(obj, Mapping) else None
                if isinstance(found, Mapping):
                    (schemas if kind == kinds.CONFIG_SCHEMA else entries)[ref] = found
    except TimeoutError:
        logger.warning(
            "admission: live reads for %s/%s took over %ss", namespace, name, LIVE_READS_SECONDS
        )


@_answers(VALIDATE_ENTRY)
async def validate_entry(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    memo: kopf.Memo,
    entries_index: kopf.Index[Any, Any],
    schemas_index: kopf.Index[Any, Any],
    namespaces_index: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """ConfigEntry: what the reconciler would refuse (see ``check_entry``), refused now."""
    if not is_checked(operation, old, body):
        return
    deadline = _deadline()
    namespace, name = identity(body)
    spec = body.get("spec")
    entries = NamespaceSpecs(entries_index, namespace)
    schemas = NamespaceSpecs(schemas_index, namespace)
    if isinstance(spec, Mapping):
        await _read_unresolved(_client(memo), namespace, name, spec, entries, schemas)
    vault = memo["settings"].vault
    annotations = next(iter(namespaces_index.get(namespace, [])), ({}, {}))[1]
    vault_paths = (  # no Vault: no secretData (the reconciler would refuse it too)
        allowed_prefixes(namespace, annotations.get(L.VAULT_PATHS), vault.allowed_path_prefixes)
        if vault.address
        else ()
    )
    violations = await isolation.check_entry(
        namespace,
        name,
        spec,
        entries,
        schemas,
        vault_paths=vault_paths,
        min_refresh=vault.min_refresh_seconds,
        deadline=deadline,
    )
    _deny(kinds.CONFIG_ENTRY.kind, namespace, name, violations)


@_answers(VALIDATE_SCHEMA)
async def validate_schema(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    entries_index: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """ConfigSchema: a usable schema, and with ``Backward`` no entry that is valid today broken."""
    if not is_checked(operation, old, body):
        return
    namespace, name = identity(body)
    entries = NamespaceSpecs(entries_index, namespace)
    old_spec = old.get("spec") if old is not None else None
    violations = await isolation.check_schema_request(
        operation, namespace, name, body.get("spec"), old_spec, entries, deadline=_deadline()
    )
    _deny(kinds.CONFIG_SCHEMA.kind, namespace, name, violations)


@_answers(VALIDATE_FLAG)
async def validate_flag(
    body: kopf.Body, old: kopf.Body | None, operation: str | None, **_: Any
) -> None:
    """FeatureFlag: variants, default, rules and splits as ``check_flag`` (and flagd) need them."""
    if not is_checked(operation, old, body):
        return
    namespace, name = identity(body)
    _deny(kinds.FEATURE_FLAG.kind, namespace, name, check_flag(body.get("spec")))


async def _stamp(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    userinfo: Mapping[str, Any],
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Record who changed the content and when (the revision history reads it); a new object is
    stored with Ferry's finalizer."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    username = str(userinfo.get("username") or "") if userinfo else ""
    change = stamp(operation, old, body, username, now)
    for key, value in change.annotations.items():
        patch.metadata.annotations[key] = value
    if change.finalizers is not None:
        patch.metadata["finalizers"] = change.finalizers


stamp_entry = _answers(STAMP_ENTRY)(_stamp)
stamp_flag = _answers(STAMP_FLAG)(_stamp)
