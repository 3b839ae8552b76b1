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
from typing import Any, Literal

from lightkube import operators

from ferry.adapters.kube_caller import (
    AccessDenied,
    AlreadyExists,
    ApiResource,
    Cluster,
    ClusterError,
    Identity,
)
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
            key = _pointer(L.CHANGE_REASON)
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


#: What happened to one document of a restore. "created" and "updated" wrote it; "refused"
#: (the API server said no: RBAC, a webhook, the CRD schema) and "conflict" (someone else changed
#: the object while it was being restored) stop the restore; what follows is "not attempted".
Outcome = Literal["created", "updated", "unchanged", "refused", "conflict", "not attempted"]
WRITTEN: frozenset[Outcome] = frozenset({"created", "updated"})
FAILED: frozenset[Outcome] = frozenset({"refused", "conflict"})
#: How often one object is read again when its resourceVersion moved between our read and our
#: write without its spec changing (the operator writing status, someone labelling it).
RESTORE_ATTEMPTS = 5


@dataclass(frozen=True)
class Restored:
    """What ``restore`` did with one document; ``message`` says why for a failure."""

    kind: str
    namespace: str
    name: str
    outcome: Outcome
    message: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class RestoreFailed(HistoryError):
    """A restore stopped at a document that was refused or in conflict. ``outcomes`` has every
    document: those written or unchanged before it, it, and the rest as "not attempted"."""

    def __init__(self, message: str, outcomes: list[Restored]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


def restore(session: Session, documents: Iterable[Mapping[str, Any]]) -> list[Restored]:
    """Give each document's object exactly the document's spec, in order, as the caller: a
    missing object is created; an existing one gets its spec replaced by a JSON patch guarded by
    its resourceVersion (as ``rollback`` does; server-side apply would keep fields other managers
    own), and the document's labels and annotations set over its own (other keys are kept).

    Stops at the first document refused or in conflict, raising :class:`RestoreFailed` with the
    outcome of every document: later documents may refer to that one (the export orders them so),
    and writing them against what is live would build a state that never existed."""
    docs = [
        restorable(d, i)
        for i, d in enumerate(documents, 1)
        if d is not None and not _exported_secret(d)
    ]
    with _edge():
        cluster = Cluster(session.identity, field_manager=RESTORE_MANAGER)
    outcomes: list[Restored] = []
    try:
        for index, doc in enumerate(docs):
            outcome = _restore_one(cluster, doc)
            outcomes.append(outcome)
            if outcome.outcome in FAILED:
                rest = [_restored(d, "not attempted") for d in docs[index + 1 :]]
                raise RestoreFailed(_stopped(outcome, outcomes, rest), outcomes + rest)
    finally:
        cluster.close()
    return outcomes


def _restored(doc: Mapping[str, Any], outcome: Outcome, message: str = "") -> Restored:
    meta = doc["metadata"]
    return Restored(doc["kind"], meta["namespace"], meta["name"], outcome, message)


def _stopped(failed: Restored, done: list[Restored], rest: list[Restored]) -> str:
    written = sum(1 for o in done if o.outcome in WRITTEN)
    unchanged = sum(1 for o in done if o.outcome == "unchanged")
    return (
        f"restore stopped at {failed.ref}: {failed.message}; before it {written} object(s) "
        f"restored and {unchanged} unchanged, {len(rest)} not attempted. Run the restore again "
        "once this is dealt with: objects already at their exported spec are left as they are"
    )


def _restore_one(cluster: Cluster, doc: Mapping[str, Any]) -> Restored:
    try:
        return _write(cluster, doc)
    except ClusterError as exc:  # RBAC, a webhook, the CRD's schema, the network: said as is
        return _restored(doc, "refused", str(exc))


def _write(cluster: Cluster, doc: Mapping[str, Any]) -> Restored:
    kind, meta = doc["kind"], doc["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    live = cluster.get(kind, namespace, name)
    if live is None:
        return _create(cluster, doc)
    read_spec = live.get("spec")
    last_error: ClusterError | None = None
    for _ in range(RESTORE_ATTEMPTS):
        if (live.get("metadata") or {}).get("deletionTimestamp"):
            return _restored(
                doc, "refused", "it is being deleted; run the restore again once it is gone"
            )
        patch = restore_patch(live, doc)
        if patch is None:
            return _restored(doc, "unchanged")
        try:
            cluster.json_patch(kind, namespace, name, patch)
            return _restored(doc, "updated")
        except ClusterError as exc:
            last_error = exc
            again = cluster.get(kind, namespace, name)
            if again is not None and _version(again) == _version(live):
                raise  # not a race: the API server refused the write itself
        if again is None:
            return _restored(doc, "conflict", "deleted by someone else while being restored")
        if again.get("spec") not in (read_spec, doc["spec"]):
            # Someone edited the spec after we read it: writing ours now would throw their edit
            # away unseen. The user decides (the restore can simply be run again).
            return _restored(
                doc,
                "conflict",
                "its spec was changed by someone else while it was being restored "
                f"(resourceVersion {_version(live)} → {_version(again)}); their spec is kept",
            )
        live = again  # only metadata or status moved (e.g. the operator's status): go again
    return _restored(
        doc,
        "conflict",
        f"it kept changing while being restored ({RESTORE_ATTEMPTS} attempts; the last one "
        f"said: {last_error})",
    )


def _create(cluster: Cluster, doc: Mapping[str, Any]) -> Restored:
    try:
        cluster.create(doc)
    except AlreadyExists:
        return _restored(
            doc, "conflict", "created by someone else while being restored; theirs is kept"
        )
    return _restored(doc, "created")


def _version(obj: Mapping[str, Any]) -> Any:
    return (obj.get("metadata") or {}).get("resourceVersion")


def restore_patch(live: Mapping[str, Any], doc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The JSON patch that gives ``live`` the document's spec exactly, and the document's labels
    and annotations (keys the document does not name are kept: an export carries only the
    change reason, and a restore must not strip, say, a GitOps tool's tracking label). None when
    there is nothing to write. The change reason alone is never a reason to write: it explains a
    spec change, and an object already at its exported spec gets none."""
    metadata = live.get("metadata") or {}
    spec_differs = live.get("spec") != doc["spec"]
    ops: list[dict[str, Any]] = []
    if spec_differs:
        ops.append(
            {"op": "replace" if "spec" in live else "add", "path": "/spec", "value": doc["spec"]}
        )
    for key in ("labels", "annotations"):
        wanted = dict(doc["metadata"].get(key) or {})
        if not spec_differs:
            wanted.pop(L.CHANGE_REASON, None)
        ops += _set_keys(key, metadata.get(key), wanted)
    if not ops:
        return None
    # The guard: a change made after ``live`` was read fails the patch instead of being lost.
    guard = {"op": "test", "path": "/metadata/resourceVersion", "value": _version(live)}
    return [guard, *ops]


def _set_keys(
    key: str, have: Mapping[str, Any] | None, wanted: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Operations setting ``wanted`` in ``metadata.<key>``, leaving its other entries alone."""
    changed = {k: v for k, v in wanted.items() if (have or {}).get(k) != v}
    if not changed:
        return []
    if have is None:  # no map yet: a JSON patch cannot add a key under a missing parent
        return [{"op": "add", "path": f"/metadata/{key}", "value": changed}]
    return [
        {"op": "add", "path": f"/metadata/{key}/{_pointer(k)}", "value": v}
        for k, v in changed.items()
    ]


def _pointer(key: str) -> str:
    """A map key as one JSON-pointer token (RFC 6901): "~" and "/" escaped."""
    return key.replace("~", "~0").replace("/", "~1")


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
