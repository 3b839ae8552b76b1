"""The history service: history, diff, rollback, export, restore and audit, as Python.

Synchronous on purpose: these run in a short-lived CLI process (or a script), never inside the
operator's event loop. Everything goes through the Kubernetes API server as the caller (their
kubeconfig, any authentication kubectl supports; ``ferry.adapters.kube_caller``): revisions and
the audit trail are read from Ferry's aggregated history API (``history.ferry.dev``, served by
``ferry history-api``, which checks RBAC for the identity the API server vouched for), so the
caller needs no database credentials. Before reading an object's history the caller's RBAC on
the object itself is checked too (a SelfSubjectAccessReview), so a refusal names the object.
Functions raise :class:`HistoryError` (or a subclass) with a message that names the object, the
revision or the document that was wrong; the adapters' own errors are translated at this edge
(:func:`_edge`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import operators

from ferry.adapters.kube_caller import AccessDenied, ApiResource, Cluster, ClusterError, Identity
from ferry.adapters.postgres import AuditRecord, Revision
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.entry import plan_entry, references, split_content
from ferry.domain.errors import Invalid
from ferry.domain.flagset import flag_content
from ferry.domain.secrets import describe_secret_changes
from ferry.domain.targets import object_name
from ferry.history import resources as R
from ferry.history.documents import KIND_ORDER, export_documents, render_diff, restorable
from ferry.history.errors import Forbidden, HistoryError, NotFound
from ferry.history.gitops import GitOps, detect_gitops

#: Kinds with history, in the order ``--kind`` is guessed when not given.
HISTORY_KINDS = (kinds.CONFIG_ENTRY.kind, kinds.FEATURE_FLAG.kind, kinds.CONFIG_SCHEMA.kind)
ROLLBACK_MANAGER = "ferry-rollback"
RESTORE_MANAGER = "ferry-restore"
REVISIONS = ApiResource(R.GROUP, R.VERSION, "ConfigRevision", R.REVISIONS)
AUDIT_EVENTS = ApiResource(R.GROUP, R.VERSION, "AuditEvent", R.AUDIT_EVENTS)


@dataclass(frozen=True)
class Session:
    """Who is asking (their kubeconfig, context and impersonation)."""

    identity: Identity = field(default_factory=Identity)


@contextlib.contextmanager
def _edge() -> Iterator[None]:
    """The adapters' errors become this service's own, message unchanged: callers catch
    :class:`HistoryError` only."""
    try:
        yield
    except AccessDenied as exc:
        raise Forbidden(str(exc)) from exc
    except ClusterError as exc:
        raise HistoryError(str(exc)) from exc


@contextlib.contextmanager
def _open(session: Session) -> Iterator[Cluster]:
    with _edge():
        cluster = Cluster(session.identity, field_manager=ROLLBACK_MANAGER)
    try:
        yield cluster
    finally:
        cluster.close()


def _recorded(
    cluster: Cluster, namespace: str, name: str, kind: str | None = None
) -> list[Revision]:
    """The revisions of one object (of every kind with that name when ``kind`` is None)."""
    fields = {"spec.entry": name} | ({"spec.kind": kind} if kind else {})
    objects = cluster.list_aggregated(REVISIONS, namespace, fields)
    return [R.revision_from_object(o) for o in objects]


def _revisions(
    cluster: Cluster, namespace: str, name: str, kind: str | None
) -> tuple[str, list[Revision]]:
    if kind is not None and kind not in HISTORY_KINDS:
        raise HistoryError(f'unknown kind "{kind}" (one of {", ".join(HISTORY_KINDS)})')
    purpose = "its history is not shown"
    if kind is None:
        try:
            found = _recorded(cluster, namespace, name)
        except AccessDenied:  # say which object: the caller may not even get it, most likely
            cluster.require("get", kinds.CONFIG_ENTRY.kind, namespace, name, purpose)
            raise
        recorded = {r.kind for r in found}
        kind = next((k for k in HISTORY_KINDS if k in recorded), kinds.CONFIG_ENTRY.kind)
        cluster.require("get", kind, namespace, name, purpose)
        revisions = [r for r in found if r.kind == kind]
    else:
        cluster.require("get", kind, namespace, name, purpose)
        revisions = _recorded(cluster, namespace, name, kind)
    if not revisions:
        raise NotFound(f"{kind} {namespace}/{name} not found: it has no recorded revisions")
    return kind, sorted(revisions, key=lambda r: r.revision)


def _pick(revisions: list[Revision], number: int) -> Revision:
    for revision in revisions:
        if revision.revision == number:
            return revision
    first = revisions[0]
    numbers = sorted(r.revision for r in revisions)
    have = f"{numbers[0]}" if len(numbers) == 1 else f"{numbers[0]} to {numbers[-1]}"
    raise NotFound(
        f"{first.kind} {first.namespace}/{first.name} has no revision {number} (it has {have})"
    )


# --------------------------------------------------------------------------------- history


def history(session: Session, namespace: str, name: str, kind: str | None = None) -> list[Revision]:
    """Every kept revision of one object, oldest first."""
    with _open(session) as cluster, _edge():
        return _revisions(cluster, namespace, name, kind)[1]


# --------------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class Diff:
    kind: str
    old_label: str
    new_label: str
    text: str  # unified diff of the resolved data; empty when equal
    secret_changes: list[str] = field(default_factory=list)
    """One line per changed ``secretData`` key ("secret value changed (version 3 → 4)"),
    from the recorded references and keyed hashes: never a value."""


def diff(
    session: Session,
    namespace: str,
    name: str,
    old: int,
    new: int | None = None,
    kind: str | None = None,
) -> Diff:
    """The resolved content of revision ``old`` against revision ``new`` or, without ``new``,
    against what the live object resolves to now."""
    with _open(session) as cluster, _edge():
        kind, revisions = _revisions(cluster, namespace, name, kind)
        before = _pick(revisions, old)
        ref = f"{kind} {namespace}/{name}"
        if new is not None:
            chosen = _pick(revisions, new)
            after_content, after_secrets = split_content(chosen.content, chosen.spec)
            new_label = f"{ref} revision {new}"
        else:
            after_content, after_secrets = _live_content(cluster, kind, namespace, name)
            new_label = f"{ref} live"
        old_label = f"{ref} revision {old}"
        before_content, before_secrets = split_content(before.content, before.spec)
        return Diff(
            kind,
            old_label,
            new_label,
            render_diff(before_content, after_content, old_label, new_label),
            describe_secret_changes(before_secrets, after_secrets),
        )


def _live_content(cluster: Cluster, kind: str, namespace: str, name: str) -> tuple[Any, list[Any]]:
    """What the live object's spec resolves to now, computed as the reconcilers do (entries:
    bases merged in and validated, with the secret records its status shows; flags:
    ``flag_content``; schemas: the spec itself)."""
    live = cluster.get(kind, namespace, name)
    if live is None:
        raise NotFound(f"{kind} {namespace}/{name} not found in the cluster (compare revisions)")
    spec = live.get("spec") or {}
    if kind == "FeatureFlag":
        return flag_content(spec), []
    if kind != "ConfigEntry":
        return spec, []
    secrets = (
        list((live.get("status") or {}).get("secrets") or []) if spec.get("secretData") else []
    )
    entries: dict[str, Mapping[str, Any]] = {}
    schemas: dict[str, Mapping[str, Any]] = {}
    pending = [name]
    while pending:  # fetch the bases it inherits from, transitively, and their schema
        current = pending.pop()
        current_spec = spec if current == name else entries.get(current, {})
        schema_name, bases = references(current_spec)
        if current == name and schema_name and schema_name not in schemas:
            schema = cluster.get("ConfigSchema", namespace, schema_name)
            if schema is not None:
                schemas[schema_name] = schema.get("spec") or {}
        for base in bases:
            if base in entries or base == name:
                continue
            found = cluster.get("ConfigEntry", namespace, base)
            if found is not None:
                entries[base] = found.get("spec") or {}
                pending.append(base)
    try:
        resolved = plan_entry(
            name,
            {k: v for k, v in spec.items() if k != "secretData"},
            entries=entries,
            schemas=schemas,
        )
        return resolved.data, secrets
    except Invalid as exc:
        raise HistoryError(
            f"the live ConfigEntry {namespace}/{name} is invalid ({exc.message}); "
            "compare two revisions instead"
        ) from exc


# --------------------------------------------------------------------------------- rollback


@dataclass(frozen=True)
class Rollback:
    kind: str
    namespace: str
    name: str
    to: int
    written: bool  # False: the live spec already was revision ``to``'s spec
    new_revision: int | None  # the revision the operator recorded for it, once seen
    same_content_as: int | None  # set when no new revision is expected (content unchanged)
    gitops: GitOps | None
    spec: Any


def rollback(
    session: Session,
    namespace: str,
    name: str,
    to: int,
    *,
    reason: str | None = None,
    kind: str | None = None,
    wait_seconds: float = 30.0,
) -> Rollback:
    """Write revision ``to``'s spec back into the live object (the resource stays the source of
    truth); the operator then records it as a new revision whose reason is "rollback to N".

    Nothing is written when the live spec already equals that spec. When the written content
    equals the latest revision's, the operator records no new revision (revisions are
    idempotent by content hash); the result says so in ``same_content_as``.
    """
    with _open(session) as cluster, _edge():
        kind, revisions = _revisions(cluster, namespace, name, kind)
        target = _pick(revisions, to)
        latest = revisions[-1]
        live = cluster.get(kind, namespace, name)
        if live is None:
            raise NotFound(
                f"{kind} {namespace}/{name} not found in the cluster: rollback writes into the "
                "live object; re-create it with `ferry export --at` and `ferry restore`"
            )
        metadata = live.get("metadata") or {}
        gitops = detect_gitops(metadata)
        same = latest.revision if target.hash == latest.hash else None
        if live.get("spec") == target.spec:
            return Rollback(kind, namespace, name, to, False, None, same, gitops, target.spec)

        text = f"rollback to {to}" + (f": {reason}" if reason else "")
        annotations = metadata.get("annotations")
        patch: list[dict[str, Any]] = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": metadata.get("resourceVersion"),
            },
            {"op": "replace", "path": "/spec", "value": target.spec},
        ]
        if annotations:
            key = L.CHANGE_REASON.replace("~", "~0").replace("/", "~1")
            patch.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": text})
        else:
            patch.append(
                {"op": "add", "path": "/metadata/annotations", "value": {L.CHANGE_REASON: text}}
            )
        # The audit row is the operator's: it records the new revision with the user the
        # mutating webhook stamped from the admission request (decision 0021), never a name
        # this process chose.
        cluster.json_patch(kind, namespace, name, patch)
        new_revision = None
        if same is None and wait_seconds > 0:
            new_revision = _wait_for_revision(cluster, kind, namespace, name, latest, wait_seconds)
        return Rollback(kind, namespace, name, to, True, new_revision, same, gitops, target.spec)


def _wait_for_revision(
    cluster: Cluster, kind: str, namespace: str, name: str, latest: Revision, seconds: float
) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        recorded = _recorded(cluster, namespace, name, kind)
        newer = sorted(r.revision for r in recorded if r.revision > latest.revision)
        if newer:
            return newer[0]
        time.sleep(0.3)
    return None


# --------------------------------------------------------------------------------- export/restore


def export(
    session: Session,
    at: dt.datetime | None = None,
    namespace: str | None = None,
    *,
    include_secrets: bool = False,
) -> list[dict[str, Any]]:
    """Manifests of every ConfigSchema, ConfigEntry and FeatureFlag as they were at ``at``
    (default: now), rebuilt from the revision store; objects deleted by then are left out.

    ``include_secrets``: also the values of each exported entry's Secret (``secretData``), read
    now from the live Secret with the caller's credentials; refused unless the caller may
    ``get`` Secrets in each namespace concerned. Ferry itself never stored them.
    """
    with _open(session) as cluster, _edge():
        for kind in KIND_ORDER:
            cluster.require("list", kind, namespace, None, "nothing is exported")
        moment = {"currentAt": R.format_time(at)} if at is not None else {"current": "true"}
        state = [
            R.revision_from_object(o) for o in cluster.list_aggregated(REVISIONS, namespace, moment)
        ]
        documents = export_documents(state, at)
        if include_secrets:
            documents += _secret_documents(cluster, documents)
        return documents


def _secret_documents(cluster: Cluster, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in documents:
        spec = doc.get("spec") or {}
        if doc.get("kind") != kinds.CONFIG_ENTRY.kind or not spec.get("secretData"):
            continue
        namespace, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        cluster.require("get", "Secret", namespace, None, "--include-secrets cannot export them")
        secret_name = object_name(name, spec.get("target"))
        values = cluster.secret_values(namespace, secret_name)
        if values is None:
            continue  # not materialised in its own namespace (yet): nothing to export
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret_name,
                    "namespace": namespace,
                    "annotations": {L.ENTRY_NAME: name, "ferry.dev/exported": "values"},
                },
                "type": "Opaque",
                "stringData": values,
            }
        )
    return out


def restore(session: Session, documents: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """Server-side apply each document (field manager ``ferry-restore``), in order, as the
    caller; returns (kind, namespace, name) of each. Stops at the first failure, naming it."""
    docs = [
        restorable(d, i)
        for i, d in enumerate(documents, 1)
        if d is not None and not _exported_secret(d)
    ]
    with _edge():
        cluster = Cluster(session.identity, field_manager=RESTORE_MANAGER)
    applied: list[tuple[str, str, str]] = []
    try:
        for doc in docs:
            meta = doc["metadata"]
            try:
                cluster.apply(doc, RESTORE_MANAGER)
            except ClusterError as exc:
                done = f" ({len(applied)} object(s) applied before it)" if applied else ""
                error = Forbidden if isinstance(exc, AccessDenied) else HistoryError
                raise error(f"{exc}{done}") from exc
            applied.append((doc["kind"], meta["namespace"], meta["name"]))
    finally:
        cluster.close()
    return applied


def _exported_secret(doc: Mapping[str, Any]) -> bool:
    """A Secret from ``export --include-secrets``: not restored (Ferry writes Secrets from
    Vault); it is in the export for whoever needs the values elsewhere."""
    return doc.get("kind") == "Secret" and doc.get("apiVersion") == "v1"


# --------------------------------------------------------------------------------- audit


def audit(
    session: Session,
    *,
    since: dt.datetime | None = None,
    user: str | None = None,
    namespace: str | None = None,
    limit: int = 1000,
) -> list[AuditRecord]:
    """The audit trail, oldest first, of the kinds the caller may ``list`` in that scope."""
    with _open(session) as cluster, _edge():
        allowed = tuple(k for k in KIND_ORDER if cluster.allowed("list", k, namespace))
        if not allowed:
            where = f'namespace "{namespace}"' if namespace else "all namespaces"
            raise Forbidden(
                f"forbidden: you may not list ConfigSchemas, ConfigEntries or FeatureFlags in "
                f"{where}, so their audit trail is not shown"
            )
        fields: dict[str, Any] = {}
        if hidden := [k for k in KIND_ORDER if k not in allowed]:
            fields["spec.kind"] = operators.not_in(hidden)
        if user is not None:
            fields["spec.user"] = user
        if since is not None:
            fields["since"] = R.format_time(since)
        objects = cluster.list_aggregated(AUDIT_EVENTS, namespace, fields, limit=limit)
        return sorted((R.audit_from_object(o) for o in objects), key=lambda a: (a.at, a.id))
