"""Reconcile FeatureFlags, and the one ``ferry-flags`` ConfigMap of each namespace they target.

Two kinds of work-queue key meet here:

* ``("FeatureFlag", ns, name)``: validate → record the revision → bring every namespace the flag
  targets now, or was served in before, up to date → status and Events. The namespaces are
  synced inline (not only queued), so that ``Ready`` means "served", which is what
  ``kubectl wait --for=condition=Ready ff/x`` is for.
* ``("FlagSet", target_ns, "")``: rebuild one namespace's ConfigMap from the flags in the index.
  Queued when the ConfigMap is deleted or edited by hand (drift) and when a flag went away.

Both end in :meth:`FlagReconciler._sync_namespace`, serialised per namespace by a lock, which
computes the whole document from the cluster as it is now (level-triggered), so running it twice,
or after a crash, writes the same thing.

Record before materialise: a flag is served only at a revision that is recorded. A flag that is
invalid, or changed but not recorded yet (PostgreSQL down), keeps serving what it served before,
taken from the ConfigMap itself (or, if someone edited that by hand, from its recorded revision).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from lightkube import ApiError

from ferry import metrics
from ferry.adapters.cache import Cache, CacheUnavailable
from ferry.adapters.kube import Kube
from ferry.adapters.store import Store, StoreUnavailable
from ferry.domain import labels as L
from ferry.domain.errors import Invalid, Violation
from ferry.domain.flags import Flag, parse_flag
from ferry.domain.flagset import (
    CONFIGMAP_NAME,
    DATA_KEY,
    FLAGSET_LABEL,
    Candidate,
    choose,
    definition,
    flag_content,
    parse_listing,
    render,
)
from ferry.domain.hashing import content_hash
from ferry.domain.targets import TargetPlan, desired_namespaces
from ferry.reconcile.reporting import Reporter, sync_conditions
from ferry.reconcile.workqueue import Requeue, WorkQueue
from ferry.reconcile.world import Key, World

KIND = "FeatureFlag"
FLAGSET = "FlagSet"
logger = logging.getLogger(__name__)

QueueKey = tuple[str, str, str]
_STORE_ERRORS = (psycopg.Error, OSError, asyncio.TimeoutError, StoreUnavailable)


@dataclass(frozen=True)
class Placement:
    """What happened to one flag in one target namespace."""

    synced: bool
    reason: str | None = None
    message: str | None = None

    def as_status(self, namespace: str) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": namespace, "synced": self.synced}
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class NamespaceResult:
    outcomes: dict[Key, Placement] = field(default_factory=dict)
    cache_error: str | None = None


@dataclass
class FlagReconciler:
    world: World
    kube: Kube
    store: Store
    cache: Cache
    queue: WorkQueue[QueueKey]
    # Kopf index of ferry-flags ConfigMaps: target namespace → {"flags": listing annotation}
    flagsets: Mapping[str, Any] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # uid → (generation, parse result): parse each flag version once, not once per namespace
    _parsed: dict[str, tuple[int, Flag | Invalid]] = field(default_factory=dict)
    # (namespace, name) → (uid, content hash, revision) recorded by this process
    _recorded: dict[Key, tuple[str, str, int]] = field(default_factory=dict)
    # (namespace, name) → target namespaces this process last served the flag in (covers the
    # moment before the ConfigMap index hears of our own write)
    _served: dict[Key, set[str]] = field(default_factory=dict)
    # uid → (generation, namespaces fingerprint, plan): a namespace sync asks every flag where
    # it goes; without this a namespace event would cost flags^2 * namespaces
    _plans: dict[str, tuple[int, int, TargetPlan]] = field(default_factory=dict)
    report: Reporter = field(init=False)

    def __post_init__(self) -> None:
        self.report = Reporter(KIND, self.kube, self.store)

    # ----------------------------------------------------------------------------- entry points
    async def reconcile(self, namespace: str, name: str) -> None:
        snapshot = self.world.flag(namespace, name)
        with metrics.RECONCILE_SECONDS.labels(KIND).time():
            try:
                if snapshot is None:
                    await self._gone(namespace, name)
                elif snapshot["deleting"]:
                    await self.finalize(namespace, name, snapshot)
                else:
                    await self.sync(namespace, name, snapshot)
            except Requeue:
                metrics.RECONCILES.labels(KIND, "requeued").inc()
                raise
            except Exception:
                metrics.RECONCILES.labels(KIND, "error").inc()
                raise
            metrics.RECONCILES.labels(KIND, "ok").inc()

    async def reconcile_namespace(self, target: str) -> None:
        """The ``FlagSet`` key: rebuild one namespace's ``ferry-flags`` from the index."""
        with metrics.RECONCILE_SECONDS.labels(FLAGSET).time():
            result = await self._sync_namespace(target)
        if result.cache_error:
            metrics.RECONCILES.labels(FLAGSET, "requeued").inc()
            raise Requeue(result.cache_error)
        metrics.RECONCILES.labels(FLAGSET, "ok").inc()

    # ----------------------------------------------------------------------------- one flag
    async def sync(self, namespace: str, name: str, snapshot: dict[str, Any]) -> None:
        spec, generation, uid = snapshot["spec"], snapshot["generation"], snapshot["uid"]
        if L.FINALIZER not in snapshot["finalizers"]:
            await self.kube.set_finalizers(
                KIND,
                namespace,
                name,
                [*snapshot["finalizers"], L.FINALIZER],
                snapshot["resourceVersion"],
            )
        parsed = self._parse(name, snapshot)
        if isinstance(parsed, Invalid):
            await self._report_invalid(namespace, name, snapshot, parsed)
            return

        content = flag_content(spec)
        digest = content_hash(content)
        revision = await self.report.record(
            namespace,
            name,
            snapshot,
            content,
            digest,
            untouched="waiting for PostgreSQL; served flags are untouched",
        )
        self._recorded[(namespace, name)] = (uid, digest, revision)

        plan = self._targets(namespace, snapshot)
        held = self._held(namespace, name)
        placements: dict[str, Placement] = {}
        cache_errors: list[str] = []
        for target in sorted(set(plan.accepted) | held):
            result = await self._sync_namespace(target, about=(namespace, name))
            if result.cache_error:
                cache_errors.append(result.cache_error)
            if target in plan.accepted:
                placements[target] = result.outcomes.get(
                    (namespace, name),
                    Placement(False, "NamespaceNotFound", f'namespace "{target}" not found'),
                )
        targets = self._target_status(namespace, plan, placements)
        for target, placement in placements.items():
            if placement.reason in ("NameConflict", "Conflict", "ApplyFailed"):
                self.report.event(
                    namespace,
                    name,
                    snapshot["uid"],
                    "Normal" if placement.synced else "Warning",
                    placement.reason,
                    f"{target}: {placement.message}",
                    once_per=(target, placement.message),
                )
        await self.report.status(
            namespace,
            name,
            snapshot,
            sync_conditions(
                targets,
                revision,
                generation,
                cache_errors[0] if cache_errors else None,
                valid="flag is valid",
                cached="served flags are in Redis",
                placed="served",
            ),
            revision=revision,
            hash=digest,
            targets=targets,
        )
        if cache_errors:
            raise Requeue(cache_errors[0])

    def _targets(
        self,
        namespace: str,
        snapshot: dict[str, Any],
        namespaces: list[tuple[str, dict[str, str], dict[str, str]]] | None = None,
        fingerprint: int | None = None,
    ) -> TargetPlan:
        """Where the flag goes: ``spec.target``, or its own namespace when absent."""
        if namespaces is None or fingerprint is None:
            namespaces = list(self.world.all_namespaces())
            fingerprint = _fingerprint(namespaces)
        uid, generation = str(snapshot["uid"]), snapshot["generation"]
        cached = self._plans.get(uid)
        if cached is not None and cached[:2] == (generation, fingerprint):
            return cached[2]
        plan = desired_namespaces(namespace, snapshot["spec"].get("target"), namespaces)
        self._plans[uid] = (generation, fingerprint, plan)
        return plan

    def _target_status(
        self, namespace: str, plan: TargetPlan, placements: dict[str, Placement]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for target in plan.accepted:
            placement = placements[target]
            out.append(placement.as_status(target))
        for target in plan.refused:
            out.append(
                Placement(
                    False,
                    "NamespaceNotAccepting",
                    f'namespace "{target}" does not accept flags from "{namespace}" (label '
                    'ferry.dev/accept="true" or annotation ferry.dev/accept-from)',
                ).as_status(target)
            )
        for target in plan.missing:
            out.append(
                Placement(False, "NamespaceNotFound", f'namespace "{target}" not found').as_status(
                    target
                )
            )
        return out

    # ----------------------------------------------------------------------------- one namespace
    def _lock(self, target: str) -> asyncio.Lock:
        return self._locks.setdefault(target, asyncio.Lock())

    async def _sync_namespace(self, target: str, about: Key | None = None) -> NamespaceResult:
        """Make ``target``'s ``ferry-flags`` hold exactly the flags served there now."""
        async with self._lock(target):
            namespaces = list(self.world.all_namespaces())
            fingerprint = _fingerprint(namespaces)
            if target not in {n for n, _, _ in namespaces}:
                # The namespace is gone, and its ConfigMap with it.
                self._forget_served(target, set())
                return NamespaceResult(cache_error=await self._cache_flags(target, None))

            live = await self.kube.get_configmap(target, CONFIGMAP_NAME)
            live_meta = live.metadata if live is not None else None
            live_labels = dict((live_meta.labels if live_meta else None) or {})
            live_annotations = dict((live_meta.annotations if live_meta else None) or {})
            live_data = dict((live.data if live is not None else None) or {})
            ours = live is None or (
                live_labels.get(FLAGSET_LABEL) == "true"
                and live_labels.get(L.MANAGED_BY) == L.MANAGED_BY_FERRY
            )
            drifted = (
                live is not None
                and ours
                and content_hash(live_data) != live_annotations.get(L.RENDERED_HASH)
            )
            listing = parse_listing(live_annotations) if live is not None and ours else {}
            live_flags = {} if drifted else _document_flags(live_data)

            candidates: list[Candidate] = []
            servable: set[Key] = set()
            for (namespace, name), snapshot in self._snapshots():
                if snapshot["deleting"]:
                    continue
                parsed = self._parse(name, snapshot)
                if isinstance(parsed, Flag):
                    digest = content_hash(flag_content(snapshot["spec"]))
                    revision = self._revision_of(namespace, name, snapshot, digest)
                    if revision is not None:
                        wanted = self._targets(namespace, snapshot, namespaces, fingerprint)
                        if target in wanted.accepted:
                            candidates.append(
                                Candidate(
                                    namespace,
                                    name,
                                    snapshot["uid"],
                                    definition(parsed),
                                    revision,
                                    digest,
                                )
                            )
                            servable.add((namespace, name))
                        continue
                held = listing.get(name)
                if (
                    held
                    and held.get("namespace") == namespace
                    and held.get("uid") == snapshot["uid"]
                ):
                    carried = await self._carried(namespace, name, held, live_flags)
                    if carried is not None:
                        candidates.append(carried)

            plan = choose(target, candidates)
            outcomes: dict[Key, Placement] = {}
            if not ours:
                message = (
                    f'ConfigMap "{CONFIGMAP_NAME}" in namespace "{target}" exists and was not '
                    "created by Ferry; it is left alone"
                )
                for candidate in candidates:
                    outcomes[candidate.source] = Placement(False, "Conflict", message)
                self._nudge(target, outcomes, servable, about)
                return NamespaceResult(outcomes)

            document, data, annotations = render(plan)
            failure: Placement | None = None
            if not data:
                if live is not None:
                    await self.kube.delete_configmap(target, CONFIGMAP_NAME)
                    logger.info("removed %s/%s: no flag is served there", target, CONFIGMAP_NAME)
            else:
                annotations[L.RENDERED_HASH] = content_hash(data)
                up_to_date = (
                    live is not None
                    and live_data == data
                    and all(live_annotations.get(k) == v for k, v in annotations.items())
                )
                if not up_to_date:
                    try:
                        await self.kube.apply_configmap(
                            target,
                            CONFIGMAP_NAME,
                            data,
                            {L.MANAGED_BY: L.MANAGED_BY_FERRY, FLAGSET_LABEL: "true"},
                            annotations,
                        )
                    except ApiError as exc:
                        if exc.status.code not in (403, 404, 422):
                            raise
                        failure = Placement(False, "ApplyFailed", str(exc.status.message))
                    else:
                        if drifted:
                            metrics.DRIFT.inc()
                            for winner in plan.winners.values():
                                self.report.event(
                                    winner.namespace,
                                    winner.name,
                                    winner.uid,
                                    "Normal",
                                    "DriftCorrected",
                                    f"restored ConfigMap {target}/{CONFIGMAP_NAME} edited by hand",
                                )
                                self.report.audit(
                                    "drift-corrected",
                                    winner.namespace,
                                    winner.name,
                                    uid=winner.uid,
                                    details={"target": f"{target}/{CONFIGMAP_NAME}"},
                                )

            for key, winner in plan.winners.items():
                others = sorted(f"{ns}/{n}" for (ns, n), w in plan.shadowed.items() if w is winner)
                if failure is not None:
                    outcomes[winner.source] = failure
                elif others:
                    outcomes[winner.source] = Placement(
                        True,
                        "NameConflict",
                        f'served here as flag "{key}"; also defined by FeatureFlag '
                        f"{', '.join(others)}, which is not served in this namespace",
                    )
                else:
                    outcomes[winner.source] = Placement(True)
            for source, winner in plan.shadowed.items():
                outcomes[source] = Placement(
                    False,
                    "NameConflict",
                    f'flag "{source[1]}" in namespace "{target}" is served from FeatureFlag '
                    f"{winner.namespace}/{winner.name} (the namespace's own flag wins, then the "
                    "first source namespace in alphabetical order)",
                )
            self._forget_served(
                target,
                {c.source for c in plan.winners.values()} if failure is None and data else set(),
            )
            cached = None
            if data:
                cached = {
                    "namespace": target,
                    "document": document,
                    "flags": parse_listing(annotations),
                }
            cache_error = await self._cache_flags(target, cached)
            self._nudge(target, outcomes, servable, about)
            return NamespaceResult(outcomes, cache_error)

    async def _carried(
        self, namespace: str, name: str, held: dict[str, Any], live_flags: dict[str, Any]
    ) -> Candidate | None:
        """The definition a not-servable flag served before: from the ConfigMap, or (if that was
        edited by hand) from the recorded revision the ConfigMap's listing names."""
        revision, digest = held.get("revision"), held.get("hash")
        if not isinstance(revision, int) or not isinstance(digest, str):
            return None
        served = live_flags.get(name)
        if isinstance(served, dict):
            return Candidate(namespace, name, str(held.get("uid")), served, revision, digest)
        try:
            revisions = await self.store.revisions(KIND, namespace, name)
        except _STORE_ERRORS as exc:
            raise Requeue(f"PostgreSQL: {exc}") from exc
        for row in revisions:
            if row.revision == revision and row.hash == digest:
                with contextlib.suppress(Invalid):
                    flag = parse_flag(name, row.content)
                    return Candidate(
                        namespace, name, str(held.get("uid")), definition(flag), revision, digest
                    )
        logger.warning(
            "revision %s of %s/%s is gone; no longer serving it", revision, namespace, name
        )
        return None

    def _nudge(
        self, target: str, outcomes: dict[Key, Placement], servable: set[Key], about: Key | None
    ) -> None:
        """Queue the other flags whose status no longer says what happened to them here (a new
        flag shadowing theirs, a foreign ConfigMap removed), so every flag's status is true."""
        for source, placement in outcomes.items():
            if source == about or source not in servable:
                continue
            snapshot = self.world.flag(*source)
            if snapshot is None:
                continue
            reported = [
                t
                for t in (snapshot.get("status") or {}).get("targets") or []
                if t.get("namespace") == target
            ]
            if reported != [placement.as_status(target)]:
                self.queue.add((KIND, *source))

    def _forget_served(self, target: str, served: set[Key]) -> None:
        for source, spots in self._served.items():
            if source not in served:
                spots.discard(target)
        for source in served:
            self._served.setdefault(source, set()).add(target)

    async def _cache_flags(self, target: str, document: dict[str, Any] | None) -> str | None:
        try:
            if document is None:
                await self.cache.delete_flags(target)
            else:
                await self.cache.put_flags(target, document)
        except CacheUnavailable as exc:
            metrics.CACHE_UP.set(0)
            metrics.CACHE_ERRORS.inc()
            return str(exc)
        metrics.CACHE_UP.set(1)
        return None

    # ----------------------------------------------------------------------------- delete
    async def finalize(self, namespace: str, name: str, snapshot: dict[str, Any]) -> None:
        """Take the flag out of every ``ferry-flags`` (deleting emptied ones), then let it go."""
        spots = self._held(namespace, name)
        if isinstance(self._parse(name, snapshot), Flag):
            spots |= set(self._targets(namespace, snapshot).accepted)
        for target in sorted(spots):
            await self._sync_namespace(target)  # a deleting flag is never a candidate
        await self.report.let_go(namespace, name, snapshot)
        self._drop(namespace, name, snapshot["uid"])

    async def _gone(self, namespace: str, name: str) -> None:
        """The flag left the index (deleted, perhaps with its finalizer removed by hand): make
        sure no namespace still serves it."""
        for target in sorted(self._held(namespace, name)):
            await self._sync_namespace(target)
        self._drop(namespace, name, None)

    def _drop(self, namespace: str, name: str, uid: str | None) -> None:
        recorded = self._recorded.pop((namespace, name), None)
        self._served.pop((namespace, name), None)
        for stale in {uid, recorded[0] if recorded else None} - {None}:
            self._parsed.pop(str(stale), None)
            self._plans.pop(str(stale), None)

    # ----------------------------------------------------------------------------- helpers
    def _snapshots(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        for key, store in list(self.world.flags.items()):
            for snapshot in store:
                yield key, snapshot

    def _parse(self, name: str, snapshot: dict[str, Any]) -> Flag | Invalid:
        uid, generation = str(snapshot["uid"]), snapshot["generation"]
        cached = self._parsed.get(uid)
        if cached is not None and cached[0] == generation:
            return cached[1]
        result: Flag | Invalid
        try:
            result = parse_flag(name, snapshot["spec"])
        except Invalid as exc:
            result = exc
        except Exception as exc:  # a malformed object must never crash the operator
            logger.exception("parsing FeatureFlag %s failed", name)
            result = Invalid("Malformed", [Violation("spec", f"malformed object: {exc}")])
        self._parsed[uid] = (generation, result)
        return result

    def _revision_of(
        self, namespace: str, name: str, snapshot: dict[str, Any], digest: str
    ) -> int | None:
        """The recorded revision of this exact content, if known; None: not recorded yet."""
        known = self._recorded.get((namespace, name))
        if known is not None and known[0] == snapshot["uid"] and known[1] == digest:
            return known[2]
        status = snapshot.get("status") or {}
        revision = status.get("revision")
        if status.get("hash") == digest and isinstance(revision, int):
            return revision
        return None

    def _held(self, namespace: str, name: str) -> set[str]:
        """Namespaces whose ``ferry-flags`` lists this flag (index), or where we just served it."""
        out = set(self._served.get((namespace, name), ()))
        for target, store in list(self.flagsets.items()):
            for obj in store:
                listed = (obj.get("flags") or {}).get(name) or {}
                if listed.get("namespace") == namespace:
                    out.add(target)
        return out

    async def _report_invalid(
        self, namespace: str, name: str, snapshot: dict[str, Any], exc: Invalid
    ) -> None:
        await self.report.invalid(
            namespace,
            name,
            snapshot,
            exc,
            event_reason="InvalidFlag",
            consequence="invalid flag: nothing recorded or served; what was served is untouched",
        )


def _fingerprint(namespaces: list[tuple[str, dict[str, str], dict[str, str]]]) -> int:
    """Changes whenever a namespace appears, goes, or changes its labels or annotations."""
    return hash(
        tuple(
            sorted(
                (n, tuple(sorted(lb.items())), tuple(sorted(an.items())))
                for n, lb, an in namespaces
            )
        )
    )


def _document_flags(data: Mapping[str, str]) -> dict[str, Any]:
    """The ``flags`` of a served flags.json, or {} if it is missing or unreadable."""
    try:
        document = json.loads(data.get(DATA_KEY) or "{}")
    except ValueError:
        return {}
    flags = document.get("flags") if isinstance(document, dict) else None
    return flags if isinstance(flags, dict) else {}
