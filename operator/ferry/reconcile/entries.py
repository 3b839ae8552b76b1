"""Reconcile one ConfigEntry: resolve → record → materialise → cache → status and Events.

Record before materialise: nothing reaches a workload without its revision row. Every step is
idempotent, so the whole function can be repeated after a crash or any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lightkube import ApiError

from ferry import metrics
from ferry.adapters.cache import Cache, CacheUnavailable
from ferry.adapters.kube import Kube, is_transient
from ferry.adapters.store import Store
from ferry.domain import labels as L
from ferry.domain.entry import EntryPlan, plan_entry, references
from ferry.domain.errors import Invalid, Violation
from ferry.domain.targets import desired_namespaces
from ferry.reconcile.reporting import Reporter, sync_conditions
from ferry.reconcile.workqueue import Requeue
from ferry.reconcile.world import Key, World

KIND = "ConfigEntry"
#: Target namespaces written at the same time by one reconcile (fan-out to many namespaces).
PARALLEL_APPLIES = 16
logger = logging.getLogger(__name__)


@dataclass
class TargetResult:
    namespace: str
    name: str
    synced: bool
    revision: int | None = None
    reason: str | None = None
    message: str | None = None

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "synced": self.synced,
        }
        if self.revision is not None:
            out["revision"] = self.revision
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class EntryReconciler:
    world: World
    kube: Kube
    store: Store
    cache: Cache
    # (namespace, base-or-schema name) → entries in that namespace that use it (from last resolve)
    dependents: dict[Key, set[str]] = field(default_factory=dict)
    report: Reporter = field(init=False)
    # (namespace, name) → what we last wrote there, for the moment before the ConfigMap index
    # hears of it: a reconcile in that moment (a quick second change) then skips an apply that
    # is already in place.
    _written: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (namespace, name) of a ConfigMap Ferry did not make → the entry it keeps out: when that
    # ConfigMap goes, the entry is reconciled at once instead of at the next resync.
    _blocked_by: dict[tuple[str, str], Key] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.report = Reporter(KIND, self.kube, self.store)

    # ----------------------------------------------------------------------------- entry point
    async def reconcile(self, namespace: str, name: str) -> None:
        entry = self.world.entry(namespace, name)
        if entry is None:
            await self._remove_leftovers(namespace, name)
            return
        with metrics.RECONCILE_SECONDS.labels(KIND).time():
            try:
                if entry["deleting"]:
                    await self.finalize(namespace, name, entry)
                else:
                    await self.sync(namespace, name, entry)
            except Requeue:
                metrics.RECONCILES.labels(KIND, "requeued").inc()
                raise
            except Exception as exc:
                if not is_transient(exc):
                    metrics.RECONCILES.labels(KIND, "error").inc()
                    raise
                # Conflicts, 429s, 5xx and network errors: expected now and then; retry quietly.
                metrics.RECONCILES.labels(KIND, "requeued").inc()
                logger.warning("%s/%s: %s; retrying", namespace, name, exc)
                raise Requeue(str(exc)) from exc
            metrics.RECONCILES.labels(KIND, "ok").inc()

    # ----------------------------------------------------------------------------- sync
    async def sync(self, namespace: str, name: str, entry: dict[str, Any]) -> None:
        spec, generation = entry["spec"], entry["generation"]
        self._remember_dependencies(namespace, name, spec)
        try:
            plan = plan_entry(
                name,
                spec,
                entries=self.world.entry_specs(namespace),
                schemas=self.world.schema_specs(namespace),
            )
        except Invalid as exc:
            await self._report_invalid(namespace, name, entry, exc)
            return
        except Exception as exc:  # a malformed object must never crash the operator
            logger.exception("planning %s/%s failed", namespace, name)
            malformed = Invalid("Malformed", [Violation("spec", f"malformed object: {exc}")])
            await self._report_invalid(namespace, name, entry, malformed)
            return
        for base in plan.bases:
            self.dependents.setdefault((namespace, base), set()).add(name)

        revision = await self.report.record(
            namespace,
            name,
            entry,
            plan.data,
            plan.hash,
            untouched="waiting for PostgreSQL; existing objects are untouched",
        )

        results = await self._materialise(namespace, name, entry, plan, revision)
        if L.FINALIZER not in entry["finalizers"]:
            # Stored while the webhook was off (the webhook adds it on create). After the first
            # write, not before: an entry deleted in between is cleaned up from its DELETED event
            # (see ``reconcile``), and the finalizer covers the rest.
            await self.kube.set_finalizers(
                KIND, namespace, name, [*entry["finalizers"], L.FINALIZER], entry["resourceVersion"]
            )
        cache_error = await self._cache(namespace, name, plan, revision)

        targets = [r.as_status() for r in results]
        conditions = sync_conditions(
            targets,
            revision,
            generation,
            cache_error,
            valid="content is valid",
            cached="rendered config is in Redis",
            placed="materialised",
        )
        await self.report.status(
            namespace,
            name,
            entry,
            conditions,
            revision=revision,
            hash=plan.hash,
            targets=targets,
        )
        if cache_error:
            raise Requeue(cache_error)

    # ----------------------------------------------------------------------------- materialise
    async def _materialise(
        self, namespace: str, name: str, entry: dict[str, Any], plan: EntryPlan, revision: int
    ) -> list[TargetResult]:
        targets = desired_namespaces(
            namespace, entry["spec"].get("target"), self.world.all_namespaces()
        )
        existing = {(o["namespace"], o["name"]): o for o in self.world.materialised(entry["uid"])}
        limit = asyncio.Semaphore(PARALLEL_APPLIES)

        async def apply(target_ns: str) -> TargetResult:
            async with limit:
                return await self._apply_target(
                    namespace,
                    name,
                    entry,
                    plan,
                    revision,
                    target_ns,
                    existing.get((target_ns, plan.object_name))
                    or self._written.get((target_ns, plan.object_name)),
                )

        results: list[TargetResult] = []
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
        for target_ns in targets.refused:
            results.append(
                TargetResult(
                    target_ns,
                    plan.object_name,
                    False,
                    None,
                    "NamespaceNotAccepting",
                    f'namespace "{target_ns}" does not accept entries from '
                    f'"{namespace}" (label {"ferry.dev/accept"}="true" or '
                    f"annotation ferry.dev/accept-from)",
                )
            )
            if self.report.event(
                namespace,
                name,
                entry["uid"],
                "Warning",
                "TargetRefused",
                f'namespace "{target_ns}" does not accept entries from "{namespace}"',
                once_per=("refused", target_ns),
            ):
                self.report.audit(
                    "target-refused",
                    namespace,
                    name,
                    uid=entry["uid"],
                    details={"target": target_ns},
                )
        for target_ns in targets.missing:
            results.append(
                TargetResult(
                    target_ns,
                    plan.object_name,
                    False,
                    None,
                    "NamespaceNotFound",
                    f'namespace "{target_ns}" not found',
                )
            )

        wanted = {(ns, plan.object_name) for ns in targets.accepted}
        for key in existing:
            if key not in wanted:
                await self._delete(*key)
                logger.info("removed %s/%s: no longer a target of %s/%s", *key, namespace, name)
        return results

    async def _apply_target(
        self,
        namespace: str,
        name: str,
        entry: dict[str, Any],
        plan: EntryPlan,
        revision: int,
        target_ns: str,
        current: dict[str, Any] | None,
    ) -> TargetResult:
        object_name = plan.object_name
        annotations = {
            L.ENTRY_NAMESPACE: namespace,
            L.ENTRY_NAME: name,
            L.REVISION: str(revision),
            L.HASH: plan.hash,
            L.RENDERED_HASH: plan.rendered_hash,
        }
        up_to_date = (
            current is not None
            and current["data_hash"] == plan.rendered_hash
            and current["annotations"] == annotations
        )
        if current is not None:
            drift = "edited by hand" if current["data_hash"] != current["rendered_hash"] else None
        else:
            drift = "deleted by hand" if _was_synced(entry, target_ns, object_name) else None
        if not up_to_date:
            if current is None and not self._may_write(target_ns, object_name, entry["uid"]):
                self._blocked_by[(target_ns, object_name)] = (namespace, name)
                return TargetResult(
                    target_ns,
                    object_name,
                    False,
                    None,
                    "Conflict",
                    f'ConfigMap "{object_name}" exists and was not created by Ferry',
                )
            try:
                await self.kube.apply_configmap(
                    target_ns,
                    object_name,
                    plan.rendered,
                    {L.MANAGED_BY: L.MANAGED_BY_FERRY, L.ENTRY_UID: entry["uid"]},
                    annotations,
                )
            except ApiError as exc:
                self.forget(target_ns, object_name)
                if exc.status.code in (403, 404, 422):
                    return TargetResult(
                        target_ns, object_name, False, None, "ApplyFailed", str(exc.status.message)
                    )
                raise
            self._written[(target_ns, object_name)] = {
                "namespace": target_ns,
                "name": object_name,
                "annotations": annotations,
                "rendered_hash": plan.rendered_hash,
                "data_hash": plan.rendered_hash,
            }
            if drift:
                metrics.DRIFT.inc()
                message = f"restored ConfigMap {target_ns}/{object_name} {drift}"
                self.report.event(
                    namespace, name, entry["uid"], "Normal", "DriftCorrected", message
                )
                self.report.audit(
                    "drift-corrected",
                    namespace,
                    name,
                    uid=entry["uid"],
                    details={"target": f"{target_ns}/{object_name}", "drift": drift},
                )
        await self._reload_workloads(target_ns, name, plan.hash)
        return TargetResult(target_ns, object_name, True, revision)

    def _may_write(self, namespace: str, object_name: str, uid: str) -> bool:
        """A ConfigMap we have not written may still exist: never overwrite one we did not make."""
        return self.world.configmap_owner(namespace, object_name) in (None, uid)

    async def _reload_workloads(self, namespace: str, entry_name: str, content_hash: str) -> None:
        for workload in self.world.reload_targets(namespace, entry_name):
            if workload["hash"] != content_hash:
                await self.kube.set_pod_template_annotation(
                    workload["kind"], namespace, workload["name"], L.CONFIG_HASH, content_hash
                )

    async def _cache(self, namespace: str, name: str, plan: EntryPlan, revision: int) -> str | None:
        try:
            await self.cache.put(
                namespace,
                name,
                revision=revision,
                content_hash=plan.hash,
                data=plan.data,
                rendered=plan.rendered,
                format=plan.format,
            )
        except CacheUnavailable as exc:
            metrics.CACHE_UP.set(0)
            metrics.CACHE_ERRORS.inc()
            return str(exc)
        metrics.CACHE_UP.set(1)
        return None

    # ----------------------------------------------------------------------------- delete
    async def finalize(self, namespace: str, name: str, entry: dict[str, Any]) -> None:
        """Remove every materialised object, then let the entry go."""
        for obj in self.world.materialised(entry["uid"]):
            await self._delete(obj["namespace"], obj["name"])
        for listed in await self.kube.list_configmaps({L.ENTRY_UID: entry["uid"]}):
            assert listed.metadata is not None
            await self._delete(str(listed.metadata.namespace), str(listed.metadata.name))
        with contextlib.suppress(CacheUnavailable):  # a stale key is harmless; Redis is a cache
            await self.cache.delete(namespace, name)
        await self.report.let_go(namespace, name, entry)

    def forget(self, namespace: str, name: str) -> None:
        """A ConfigMap we wrote is gone (its DELETED event): stop assuming it is there."""
        self._written.pop((namespace, name), None)

    def unblocked_by(self, namespace: str, name: str) -> Key | None:
        """A ConfigMap was deleted: the entry it kept from writing there, if any."""
        return self._blocked_by.pop((namespace, name), None)

    async def _delete(self, namespace: str, name: str) -> None:
        self.forget(namespace, name)
        await self.kube.delete_configmap(namespace, name)

    async def _remove_leftovers(self, namespace: str, name: str) -> None:
        """An entry gone without our finalizer (deleted before its first sync finished, or the
        finalizer removed by hand): remove what it materialised, found by its annotations."""
        for store in list(self.world.configmaps.values()):
            for obj in list(store):
                if (obj["entry_namespace"], obj["entry_name"]) == (namespace, name):
                    await self._delete(obj["namespace"], obj["name"])

    # ----------------------------------------------------------------------------- helpers
    def _remember_dependencies(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        schema, bases = references(spec)
        for dependency in (*bases, *([f"schema:{schema}"] if schema else [])):
            self.dependents.setdefault((namespace, dependency), set()).add(name)

    def users_of(self, namespace: str, dependency: str) -> Iterable[str]:
        return tuple(self.dependents.get((namespace, dependency), ()))

    async def _report_invalid(
        self, namespace: str, name: str, entry: dict[str, Any], exc: Invalid
    ) -> None:
        await self.report.invalid(
            namespace,
            name,
            entry,
            exc,
            event_reason="InvalidConfig",
            consequence="invalid content: nothing materialised; existing objects are untouched",
        )


def _was_synced(entry: dict[str, Any], namespace: str, object_name: str) -> bool:
    """Whether status says we had written this target: then its absence is someone's delete."""
    return any(
        t.get("namespace") == namespace and t.get("name") == object_name and t.get("synced")
        for t in (entry.get("status") or {}).get("targets") or []
    )
