"""Reconcile one ConfigEntry: resolve → record → materialise → cache → status and Events.

Record before materialise: nothing reaches a workload without its revision row. Every step is
idempotent, so the whole function can be repeated after a crash or any failure. Writing into the
target namespaces is placement's job (``reconcile/placement.py``); this module says what each
target should hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ferry.adapters.cache import Cache, CacheUnavailable
from ferry.adapters.kube import Kube
from ferry.adapters.postgres import Store
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain import placement as P
from ferry.domain.conditions import Condition, progress, sync_conditions
from ferry.domain.entry import EntryPlan, references, revision_content
from ferry.domain.errors import Invalid, Violation
from ferry.domain.hashing import content_hash
from ferry.domain.secrets import SecretRecord, records_json
from ferry.domain.targets import (
    RefusedTargets,
    desired_namespaces,
    refused_changed,
    summarise_refused,
)
from ferry.reconcile import isolation, runner
from ferry.reconcile.blocked import GoneWatches
from ferry.reconcile.placement import Placer
from ferry.reconcile.reporting import REMOVE, Reporter, Source, cache_write
from ferry.reconcile.secrets import VaultSecrets
from ferry.reconcile.workqueue import Requeue
from ferry.reconcile.world import Key, Materialised, ObjectIndex, Snapshot, World

KIND = kinds.CONFIG_ENTRY.kind
#: When a conflict cannot get a watch of its own (GoneWatches' limit), how soon to look again.
RECHECK_BLOCKED_SECONDS = 60.0
SECRETS_RESOLVED = "SecretsResolved"
ObjectKey = tuple[str, str, str]  # (kind, namespace, name) of a materialised object


@dataclass(frozen=True)
class ResolvedSecrets:
    """An entry's values from Vault for one reconcile: records to keep, data to write."""

    records: list[SecretRecord] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict, repr=False)

    def condition(self, generation: int) -> Condition:
        if not self.records:
            return Condition(SECRETS_RESOLVED, "True", "NoSecrets", "no secretData", generation)
        versions = ", ".join(f"{r.name} (version {r.version})" for r in self.records)
        return Condition(SECRETS_RESOLVED, "True", "Resolved", f"read {versions}", generation)


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dependency:
    """Something an entry's content depends on, in the entry's namespace."""

    kind: str  # ConfigEntry (a base) or ConfigSchema
    namespace: str
    name: str


@dataclass
class EntryReconciler:
    world: World
    kube: Kube
    store: Store
    cache: Cache
    parallel_applies: int = 16
    """Target namespaces written at the same time by one reconcile (settings.reconcile)."""
    vault: VaultSecrets | None = None
    """Where ``secretData`` values come from; None: no Vault, such entries are refused."""
    schedule: Callable[[str, str, float], None] | None = None
    """Reconcile entry (namespace, name) again after so many seconds (secret rotation)."""
    # A base or schema → entries that used it at their last resolve (re-resolved when it changes).
    dependents: dict[Dependency, set[str]] = field(default_factory=dict)
    report: Reporter = field(init=False)
    placer: Placer = field(init=False)
    # (kind, namespace, name) → which entry (uid) last wrote there and what, for the moment
    # before the index hears of it: a reconcile of *that* entry in that moment (a quick second
    # change) then skips an apply already in place. Only that entry's: two entries may name the
    # same object in a namespace that accepts both, and the second must meet the first's object
    # as someone else's (a Conflict), never update it as its own.
    _written: dict[ObjectKey, tuple[str, P.Observed]] = field(default_factory=dict)
    blocked: GoneWatches | None = None
    """Watches a name taken by someone else's object, so the entry it keeps out writes as soon
    as that object goes (None: only the periodic resync looks again)."""
    # (namespace, name) → (ferry.dev/refresh value, when the watch first saw it)
    _refresh_asked: dict[Key, tuple[str, float]] = field(default_factory=dict)
    # Vault path → entries whose secretData reads its latest version (as of their last sync):
    # a new version found by any one entry's read re-renders all of them.
    _path_users: ObjectIndex[str, Key] = field(default_factory=ObjectIndex)

    def __post_init__(self) -> None:
        self.report = Reporter(KIND, self.kube, self.store)
        self.placer = Placer(self.kube)
        if self.vault is not None:
            self.vault.on_rotation = self._path_rotated

    # ----------------------------------------------------------------------------- entry point
    async def reconcile(self, namespace: str, name: str) -> None:
        entry = self.world.entry(namespace, name)
        if entry is None:
            await self._remove_leftovers(namespace, name)
            return
        work = self.finalize if entry.deleting else self.sync
        await runner.run(KIND, f"{namespace}/{name}", work(namespace, name, entry))

    # ----------------------------------------------------------------------------- sync
    async def sync(self, namespace: str, name: str, entry: Snapshot) -> None:
        self._remember_dependencies(namespace, name, entry)
        vault_paths = (
            self.vault.prefixes(namespace, self.world.namespace_annotations(namespace))
            if self.vault is not None
            else ()
        )
        try:
            plan = await isolation.plan_entry(  # in a worker process, bounded (issue 11)
                name,
                entry.spec,
                entries=self.world.entry_specs(namespace),
                schemas=self.world.schema_specs(namespace),
                vault_paths=vault_paths,
                namespace=namespace,
                memo=isolation.PLANS,
            )
        except Invalid as exc:
            await self.report.invalid(namespace, name, entry, exc)
            return
        except Exception as exc:  # a malformed object must never crash the operator
            logger.exception("planning %s/%s failed", namespace, name)
            malformed = Invalid("Malformed", [Violation("spec", f"malformed object: {exc}")])
            await self.report.invalid(namespace, name, entry, malformed)
            return
        for base in plan.bases:
            self.dependents.setdefault(Dependency(KIND, namespace, base), set()).add(name)
        latest = {ref.vault.path for ref in plan.secrets if ref.vault.version is None}
        self._path_users.put((namespace, name), dict.fromkeys(latest, (namespace, name)))

        secrets = await self._resolve_secrets(namespace, name, entry, plan)
        if secrets is None:
            return  # reported: nothing is written until every value is read
        content = revision_content(plan.data, records_json(secrets.records))
        digest = content_hash(content)
        revision = await self.report.record(
            namespace,
            name,
            entry,
            content,
            digest,
            untouched="waiting for PostgreSQL; existing objects are untouched",
        )

        results, refused = await self._materialise(
            namespace, name, entry, plan, revision, digest, secrets
        )
        # After the first write, not before: an entry deleted in between is cleaned up from its
        # DELETED event (see ``reconcile``), and the finalizer covers the rest.
        await self.report.hold_on(namespace, name, entry)
        cache_error = await cache_write(
            self.cache.put(
                namespace,
                name,
                revision=revision,
                content_hash=digest,
                data=plan.data,
                rendered=plan.rendered,
                format=plan.format,
            )
        )
        conditions = sync_conditions(
            results,
            revision,
            entry.generation,
            cache_error,
            valid="content is valid",
            cached="rendered config is in Redis",
            placed="materialised",
        )
        if plan.secrets or entry.condition(SECRETS_RESOLVED):
            conditions.append(secrets.condition(entry.generation))
        await self.report.status(
            namespace,
            name,
            entry,
            conditions,
            revision=revision,
            hash=digest,
            targets=[r.as_status() for r in results],
            refusedTargets=refused.as_status() if refused.count else REMOVE,
            secrets=[r.to_json() for r in secrets.records] if plan.secrets else REMOVE,
            observedRefresh=entry.annotations.get(L.REFRESH),
        )
        if plan.secrets:
            self._schedule_refresh(namespace, name, entry)
        if cache_error:
            raise Requeue(cache_error)

    async def _resolve_secrets(
        self, namespace: str, name: str, entry: Snapshot, plan: EntryPlan
    ) -> ResolvedSecrets | None:
        """Every ``secretData`` value, read from Vault; None when any cannot be read (reported:
        SecretsResolved=False naming path, key and Vault's reason, never a value; what was
        materialised before stays as it is)."""
        if not plan.secrets:
            return ResolvedSecrets()
        if self.vault is None:
            await self._secrets_failed(
                namespace, name, entry, "VaultNotConfigured", "no Vault is configured", True
            )
            return None
        resolution = await self.vault.resolve(
            plan.secrets,
            namespace=namespace,
            fresh_since=self._refresh_asked_at(namespace, name, entry),
        )
        if resolution.failures:
            failures = sorted(resolution.failures.items())
            message = "; ".join(f"spec.secretData.{key}: {error}" for key, error in failures)
            reason = failures[0][1].reason or type(failures[0][1]).__name__
            retryable = any(getattr(e, "retryable", False) for _, e in failures)
            await self._secrets_failed(namespace, name, entry, reason, message, not retryable)
            if retryable:
                raise Requeue(message)
            return None
        data = {
            key: value.value.decode("utf-8", "surrogatepass")
            for key, value in sorted(resolution.values.items())
        }
        return ResolvedSecrets(self.vault.records(resolution, namespace, name), data)

    def saw_refresh(self, namespace: str, name: str, value: str | None) -> None:
        """The watch saw the entry's ``ferry.dev/refresh`` annotation (handlers/watches): keep
        when a new value first appeared, so one Vault read started after it serves it."""
        if value is None:
            self._refresh_asked.pop((namespace, name), None)
        elif self._refresh_asked.get((namespace, name), (None, 0.0))[0] != value:
            self._refresh_asked[(namespace, name)] = (value, time.monotonic())

    def _refresh_asked_at(self, namespace: str, name: str, entry: Snapshot) -> float | None:
        """When a refresh not yet acted upon was asked for (None: none is pending)."""
        asked = entry.annotations.get(L.REFRESH)
        if asked is None or asked == entry.status.get("observedRefresh"):
            return None
        seen = self._refresh_asked.get((namespace, name))
        return seen[1] if seen is not None and seen[0] == asked else time.monotonic()

    def _path_rotated(self, path: str) -> None:
        """A read found a new version of ``path``: every entry using it re-renders now, from
        that read (shared for ``min_refresh``), instead of waiting for its own refresh slot.
        This is what makes a rotation one Vault read and one pass over its users."""
        if self.schedule is None:
            return
        for namespace, name in self._path_users.get(path, []):
            self.schedule(namespace, name, 0.0)

    def _schedule_refresh(self, namespace: str, name: str, entry: Snapshot) -> None:
        """Reconcile again at the entry's next refresh slot (spread by uid over its interval)."""
        if self.vault is not None and self.schedule is not None:
            self.schedule(namespace, name, self.vault.refresh_delay(entry.uid, entry.spec))

    async def _secrets_failed(
        self, namespace: str, name: str, entry: Snapshot, reason: str, message: str, stall: bool
    ) -> None:
        generation = entry.generation
        untouched = "values from Vault could not be read; existing objects are untouched"
        await self.report.status(
            namespace,
            name,
            entry,
            [
                Condition("Valid", "True", "Valid", "content is valid", generation),
                Condition(SECRETS_RESOLVED, "False", reason, message, generation),
                Condition("Ready", "False", "SecretsNotResolved", untouched, generation),
                *progress(
                    generation=generation,
                    stalled=(reason, message) if stall else None,
                    reconciling=None if stall else (reason, message),
                ),
            ],
        )
        previous = entry.condition(SECRETS_RESOLVED)
        if previous is None or previous.get("message") != message:
            self.report.event(namespace, name, entry.uid, "Warning", reason, message)
        if stall:  # not found, deleted, denied: look again at the next refresh, not sooner
            self._schedule_refresh(namespace, name, entry)

    # ----------------------------------------------------------------------------- materialise
    async def _materialise(
        self,
        namespace: str,
        name: str,
        entry: Snapshot,
        plan: EntryPlan,
        revision: int,
        digest: str,
        secrets: ResolvedSecrets,
    ) -> tuple[list[P.TargetResult], RefusedTargets]:
        targets = desired_namespaces(
            namespace, entry.spec.get("target"), self.world.all_namespaces()
        )
        existing = {(o.kind, o.namespace, o.name): o for o in self.world.materialised(entry.uid)}
        limit = asyncio.Semaphore(self.parallel_applies)
        source = Source(namespace, name, entry.uid)

        async def apply(target_ns: str) -> P.TargetResult:
            async with limit:
                return await self._apply_target(
                    source, entry, plan, revision, digest, secrets, target_ns, existing
                )

        results: list[P.TargetResult] = []
        if len(targets.accepted) == 1:  # the usual case: no task, so no wait for the loop
            results.append(await apply(targets.accepted[0]))
        else:
            # Targets are independent: write them side by side, and let every one finish before
            # a failure is raised (each retry starts from what is already in place).
            outcomes = await asyncio.gather(
                *(apply(ns) for ns in targets.accepted), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                results.append(outcome)
        # Refusals: counted and the first few named in status.refusedTargets; one Event and one
        # audit row when the refused set changes, not per namespace nor after every restart.
        refused = summarise_refused(targets.refused)
        if refused.count and refused_changed(entry.status.get("refusedTargets"), refused):
            message = refused.describe(namespace)
            self.report.event(namespace, name, entry.uid, "Warning", "TargetRefused", message)
            details = refused.as_status()
            self.report.audit("target-refused", namespace, name, uid=entry.uid, details=details)
        results.extend(P.not_found(ns, plan.object_name) for ns in targets.missing)

        wanted = {("ConfigMap", ns, plan.object_name) for ns in targets.accepted}
        if plan.secrets:
            wanted |= {("Secret", ns, plan.object_name) for ns in targets.accepted}
        for (kind, *key), obj in existing.items():
            if (kind, *key) not in wanted:
                await self._delete(obj)
                logger.info("removed %s/%s: no longer a target of %s/%s", *key, namespace, name)
        return results, refused

    def _observed(
        self,
        entry_uid: str,
        kind: str,
        target_ns: str,
        name: str,
        existing: dict[ObjectKey, Materialised],
    ) -> P.Observed | None:
        """What entry ``entry_uid`` has under the object's name in ``target_ns``, from the
        indexes where they know (``existing``: that entry's objects only)."""
        if (ours := existing.get((kind, target_ns, name))) is not None:
            return P.Observed(True, ours.data_hash, ours.annotations, ours.uid)
        writer, written = self._written.get((kind, target_ns, name), (None, None))
        if writer == entry_uid:
            return written
        # Not known to be ours: the placer creates it, and an AlreadyExists is read and taken
        # over only if it is ours (the index had yet to hear). No index of every ConfigMap or
        # Secret in the cluster is kept to know beforehand (decision 0023).
        return None

    async def _apply_target(
        self,
        source: Source,
        entry: Snapshot,
        plan: EntryPlan,
        revision: int,
        digest: str,
        secrets: ResolvedSecrets,
        target_ns: str,
        existing: dict[ObjectKey, Materialised],
    ) -> P.TargetResult:
        object_name = plan.object_name
        labels = {L.MANAGED_BY: L.MANAGED_BY_FERRY, L.ENTRY_UID: entry.uid}
        annotations = {
            L.ENTRY_NAMESPACE: source.namespace,
            L.ENTRY_NAME: source.name,
            L.REVISION: str(revision),
            L.HASH: digest,
        }
        # Which revision wrote an object is not a reason to rewrite it (see Desired.provenance).
        provenance = frozenset({L.REVISION, L.HASH})
        wanted = [
            P.Desired(
                "ConfigMap",
                target_ns,
                object_name,
                plan.rendered,
                labels,
                {**annotations, L.RENDERED_HASH: plan.rendered_hash},
                provenance,
            )
        ]
        if plan.secrets and self.vault is not None:
            encoded = {k: v.encode("utf-8", "surrogatepass") for k, v in secrets.data.items()}
            rendered_hash = self.vault.digest(target_ns, object_name, encoded)
            wanted.append(
                P.Desired(
                    "Secret",
                    target_ns,
                    object_name,
                    secrets.data,
                    labels,
                    {**annotations, L.RENDERED_HASH: rendered_hash},
                    provenance,
                )
            )
        for desired in wanted:
            key = (desired.kind, target_ns, object_name)
            placed = await self.placer.place(
                desired,
                self._observed(entry.uid, desired.kind, target_ns, object_name, existing),
                sources=[(self.report, source)],
                was_synced=_was_synced(entry, target_ns, object_name),
                status_name=object_name,
            )
            if placed.failure is not None:
                self._written.pop(key, None)
                if placed.failure.reason == P.CONFLICT:
                    self._wait_for_removal(desired.kind, target_ns, object_name, source)
                return placed.failure
            if placed.written:
                self._written[key] = (
                    entry.uid,
                    P.Observed(True, desired.rendered_hash, desired.annotations, placed.uid),
                )
        await self._reload_workloads(target_ns, source, digest)
        return P.TargetResult(target_ns, True, object_name, revision)

    async def _reload_workloads(self, target_ns: str, source: Source, content_hash: str) -> None:
        for workload in self.world.reload_targets(target_ns, source.namespace, source.name):
            if workload.config_hash != content_hash:
                await self.kube.set_pod_template_annotation(
                    workload.kind, target_ns, workload.name, L.CONFIG_HASH, content_hash
                )

    # ----------------------------------------------------------------------------- delete
    async def finalize(self, namespace: str, name: str, entry: Snapshot) -> None:
        """Remove every materialised object, then let the entry go."""
        for obj in self.world.materialised(entry.uid):
            await self._delete(obj)
        for kind in ("ConfigMap", "Secret"):  # what the indexes may not have heard of yet
            for namespace_, name_ in await self.kube.list_labelled(kind, {L.ENTRY_UID: entry.uid}):
                self.forget(kind, namespace_, name_)
                await self.placer.remove(kind, namespace_, name_, labels={L.ENTRY_UID: entry.uid})
        with contextlib.suppress(CacheUnavailable):  # a stale key is harmless; Redis is a cache
            await self.cache.delete(namespace, name)
        self._path_users.drop((namespace, name))
        await self.report.let_go(namespace, name, entry)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """An object we wrote is gone (its DELETED event): stop assuming it is there."""
        self._written.pop((kind, namespace, name), None)

    def _wait_for_removal(self, kind: str, namespace: str, name: str, source: Source) -> None:
        """Reconcile ``source`` again once the foreign object in its way is gone."""
        owner = (source.namespace, source.name)
        if self.blocked is not None and self.blocked.watch(kind, namespace, name, owner):
            return
        if self.schedule is not None:  # too many conflicts to watch each: look again later
            self.schedule(source.namespace, source.name, RECHECK_BLOCKED_SECONDS)

    async def _delete(self, obj: Materialised) -> None:
        """Delete that very object (its uid a precondition, as every delete, decision 0018):
        one made under the same name since the index saw it stays."""
        self.forget(obj.kind, obj.namespace, obj.name)
        await self.placer.remove(obj.kind, obj.namespace, obj.name, uid=obj.uid)

    async def _remove_leftovers(self, namespace: str, name: str) -> None:
        """An entry gone without our finalizer (deleted before its first sync finished, or the
        finalizer removed by hand): remove what it materialised, found by its annotations."""
        self._path_users.drop((namespace, name))
        for obj in list(self.world.materialised_by_name(namespace, name)):
            await self._delete(obj)

    # ----------------------------------------------------------------------------- helpers
    def _remember_dependencies(self, namespace: str, name: str, entry: Snapshot) -> None:
        schema, bases = references(entry.spec)
        dependencies = [Dependency(KIND, namespace, base) for base in bases]
        if schema:
            dependencies.append(Dependency(kinds.CONFIG_SCHEMA.kind, namespace, schema))
        for dependency in dependencies:
            self.dependents.setdefault(dependency, set()).add(name)

    def users_of(self, kind: str, namespace: str, name: str) -> Iterable[str]:
        """Entries in ``namespace`` that used the ``kind`` object ``name`` when last resolved."""
        return tuple(self.dependents.get(Dependency(kind, namespace, name), ()))


def _was_synced(entry: Snapshot, namespace: str, object_name: str) -> bool:
    """Whether status says we had written this target: then its absence is someone's delete."""
    return any(
        t.get("namespace") == namespace and t.get("name") == object_name and t.get("synced")
        for t in entry.status.get("targets") or []
    )
