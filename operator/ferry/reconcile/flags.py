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

from lightkube.resources.core_v1 import ConfigMap

from ferry.adapters.cache import Cache
from ferry.adapters.kube import Kube
from ferry.adapters.postgres import Store, StoreUnavailable
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain import placement as P
from ferry.domain.conditions import sync_conditions
from ferry.domain.errors import Invalid
from ferry.domain.flags import DEFAULT_BUCKETING, Flag, bucketing_for, parse_flag
from ferry.domain.flagset import (
    CONFIGMAP_NAME,
    DATA_KEY,
    Candidate,
    choose,
    definition,
    flag_content,
    parse_listing,
    render,
)
from ferry.domain.hashing import content_hash
from ferry.domain.targets import (
    TargetPlan,
    desired_namespaces,
    refused_changed,
    summarise_refused,
)
from ferry.reconcile import runner
from ferry.reconcile.parsed import ParsedFlags
from ferry.reconcile.placement import Placer
from ferry.reconcile.reporting import REMOVE, Reporter, Source, cache_write
from ferry.reconcile.workqueue import QueueKey, Requeue, WorkQueue
from ferry.reconcile.world import Key, Snapshot, World

KIND = kinds.FEATURE_FLAG.kind
FLAGSET = kinds.FLAG_SET
NAME_CONFLICT = "NameConflict"
logger = logging.getLogger(__name__)


@dataclass
class NamespaceResult:
    """What one namespace's sync did for each flag that wanted to be served there."""

    outcomes: dict[Key, P.TargetResult] = field(default_factory=dict)
    cache_error: str | None = None


@dataclass
class FlagReconciler:
    world: World
    kube: Kube
    store: Store
    cache: Cache
    queue: WorkQueue[QueueKey]
    # Index of ferry-flags ConfigMaps (handlers/followed):
    # target namespace → {"flags": listing annotation}
    flagsets: Mapping[str, Any] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # uid → (generation, parse result): parse each flag version once, not once per namespace
    _parsed: ParsedFlags = field(default_factory=ParsedFlags)
    # (namespace, name) → target namespaces this process last served the flag in (covers the
    # moment before the ConfigMap index hears of our own write)
    _served: dict[Key, set[str]] = field(default_factory=dict)
    # uid → (generation, namespaces fingerprint, plan): a namespace sync asks every flag where
    # it goes; without this a namespace event would cost flags^2 * namespaces
    _plans: dict[str, tuple[int, int, TargetPlan]] = field(default_factory=dict)
    default_bucketing: str = DEFAULT_BUCKETING
    """The generation a new flag gets (settings.flags); see docs/decisions/0014."""
    report: Reporter = field(init=False)
    placer: Placer = field(init=False)

    def __post_init__(self) -> None:
        self.report = Reporter(KIND, self.kube, self.store, stamp=self._bucketing)
        self.placer = Placer(self.kube)

    def _bucketing(self, snapshot: Snapshot) -> dict[str, Any]:
        """``status.bucketing``, written with every status (and so with the first revision)."""
        generation = bucketing_for(snapshot.spec, snapshot.status, self.default_bucketing)
        return {"bucketing": str(generation)}

    # ----------------------------------------------------------------------------- entry points
    async def reconcile(self, namespace: str, name: str) -> None:
        snapshot = self.world.flag(namespace, name)
        if snapshot is None:
            work = self._gone(namespace, name)
        elif snapshot.deleting:
            work = self.finalize(namespace, name, snapshot)
        else:
            work = self.sync(namespace, name, snapshot)
        await runner.run(KIND, f"{namespace}/{name}", work)

    async def reconcile_namespace(self, target: str) -> None:
        """The ``FlagSet`` key: rebuild one namespace's ``ferry-flags`` from the index."""

        async def work() -> None:
            result = await self._sync_namespace(target)
            if result.cache_error:
                raise Requeue(result.cache_error)

        await runner.run(FLAGSET, target, work())

    # ----------------------------------------------------------------------------- one flag
    async def sync(self, namespace: str, name: str, snapshot: Snapshot) -> None:
        await self.report.hold_on(namespace, name, snapshot)
        parsed = self._parse(name, snapshot)
        if isinstance(parsed, Invalid):
            await self.report.invalid(namespace, name, snapshot, parsed)
            return

        content = flag_content(snapshot.spec)
        digest = content_hash(content)
        revision = await self.report.record(
            namespace,
            name,
            snapshot,
            content,
            digest,
            untouched="waiting for PostgreSQL; served flags are untouched",
        )

        plan = self._targets(namespace, snapshot)
        held = self._held(namespace, name)
        results: list[P.TargetResult] = []
        cache_errors: list[str] = []
        for target in sorted(set(plan.accepted) | held):
            synced = await self._sync_namespace(target, about=(namespace, name))
            if synced.cache_error:
                cache_errors.append(synced.cache_error)
            if target in plan.accepted:
                result = synced.outcomes.get((namespace, name), P.not_found(target))
                results.append(result)
                if result.reason in (NAME_CONFLICT, P.CONFLICT, P.APPLY_FAILED):
                    self.report.event(
                        namespace,
                        name,
                        snapshot.uid,
                        "Normal" if result.synced else "Warning",
                        str(result.reason),
                        f"{target}: {result.message}",
                        once_per=(target, result.message),
                    )
        # Refusals: counted and the first few named in status.refusedTargets (as for entries);
        # an Event only when the refused set changes.
        refused = summarise_refused(plan.refused)
        if refused.count and refused_changed(snapshot.status.get("refusedTargets"), refused):
            message = refused.describe(namespace, "flags")
            self.report.event(namespace, name, snapshot.uid, "Warning", "TargetRefused", message)
        results.extend(P.not_found(t) for t in plan.missing)
        await self.report.status(
            namespace,
            name,
            snapshot,
            sync_conditions(
                results,
                revision,
                snapshot.generation,
                cache_errors[0] if cache_errors else None,
                valid="flag is valid",
                cached="served flags are in Redis",
                placed="served",
            ),
            revision=revision,
            hash=digest,
            targets=[r.as_status() for r in results],
            refusedTargets=refused.as_status() if refused.count else REMOVE,
        )
        if cache_errors:
            raise Requeue(cache_errors[0])

    def _targets(
        self,
        namespace: str,
        snapshot: Snapshot,
        namespaces: list[tuple[str, dict[str, str], dict[str, str]]] | None = None,
        fingerprint: int | None = None,
    ) -> TargetPlan:
        """Where the flag goes: ``spec.target``, or its own namespace when absent."""
        if namespaces is None or fingerprint is None:
            namespaces = list(self.world.all_namespaces())
            fingerprint = _fingerprint(namespaces)
        cached = self._plans.get(snapshot.uid)
        if cached is not None and cached[:2] == (snapshot.generation, fingerprint):
            return cached[2]
        plan = desired_namespaces(namespace, snapshot.spec.get("target"), namespaces)
        self._plans[snapshot.uid] = (snapshot.generation, fingerprint, plan)
        return plan

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
                return NamespaceResult(
                    cache_error=await cache_write(self.cache.delete_flags(target))
                )

            # A live read, not an index: a flag that is not servable now keeps serving the
            # definition this ConfigMap holds (see ``_carried``).
            live = await self.kube.get_configmap(target, CONFIGMAP_NAME)
            observed = _observe(live)
            live_data = dict((live.data if live is not None else None) or {})
            listing = parse_listing(observed.annotations) if observed and observed.ours else {}
            live_flags = {} if observed is None or observed.edited else _document_flags(live_data)

            candidates, servable = await self._candidates(
                target, namespaces, fingerprint, listing, live_flags
            )
            plan = choose(target, candidates, listing)  # what is served keeps its name
            document, data, annotations = render(plan)
            outcomes: dict[Key, P.TargetResult] = {}
            failure: P.TargetResult | None = None
            if not data:
                if observed is not None and observed.ours:
                    await self.placer.remove("ConfigMap", target, CONFIGMAP_NAME, uid=observed.uid)
                    logger.info("removed %s/%s: no flag is served there", target, CONFIGMAP_NAME)
            else:
                annotations[L.RENDERED_HASH] = content_hash(data)
                desired = P.Desired(
                    "ConfigMap",
                    target,
                    CONFIGMAP_NAME,
                    data,
                    {L.MANAGED_BY: L.MANAGED_BY_FERRY, L.FLAGSET: "true"},
                    annotations,
                )
                winners = [Source(w.namespace, w.name, w.uid) for w in plan.winners.values()]
                placed = await self.placer.place(
                    desired, observed, sources=[(self.report, w) for w in winners]
                )
                failure = placed.failure
                if failure is not None and failure.reason == P.CONFLICT:
                    # Someone else's ferry-flags: every flag that wanted to be here is refused.
                    outcomes = {c.source: failure for c in candidates}
                    self._nudge(target, outcomes, servable, about)
                    return NamespaceResult(outcomes)

            for key, winner in plan.winners.items():
                others = sorted(f"{ns}/{n}" for (ns, n), w in plan.shadowed.items() if w is winner)
                if failure is not None:
                    outcomes[winner.source] = failure
                elif others:
                    outcomes[winner.source] = P.TargetResult(
                        target,
                        True,
                        reason=NAME_CONFLICT,
                        message=f'served here as flag "{key}"; also defined by FeatureFlag '
                        f"{', '.join(others)}, which is not served in this namespace",
                    )
                else:
                    outcomes[winner.source] = P.TargetResult(target, True)
            for source, winner in plan.shadowed.items():
                outcomes[source] = P.TargetResult(
                    target,
                    False,
                    reason=NAME_CONFLICT,
                    message=f'flag "{source[1]}" in namespace "{target}" is served from '
                    f"FeatureFlag {winner.namespace}/{winner.name} (a flag name is first come, "
                    "first served; between new flags the namespace's own wins, then the first "
                    "source namespace in alphabetical order)",
                )
            self._forget_served(
                target,
                {c.source for c in plan.winners.values()} if failure is None and data else set(),
            )
            if data:
                cached = {
                    "namespace": target,
                    "document": document,
                    "flags": parse_listing(annotations),
                }
                cache_error = await cache_write(self.cache.put_flags(target, cached))
            else:
                cache_error = await cache_write(self.cache.delete_flags(target))
            self._nudge(target, outcomes, servable, about)
            return NamespaceResult(outcomes, cache_error)

    async def _candidates(
        self,
        target: str,
        namespaces: list[tuple[str, dict[str, str], dict[str, str]]],
        fingerprint: int,
        listing: dict[str, dict[str, Any]],
        live_flags: dict[str, Any],
    ) -> tuple[list[Candidate], set[Key]]:
        """Every flag that wants to be served in ``target``, and which of them are servable now
        (valid, recorded); the others keep the definition they were served with, if any."""
        candidates: list[Candidate] = []
        servable: set[Key] = set()
        for (namespace, name), snapshot in self.world.flag_snapshots():
            if snapshot.deleting:
                continue
            parsed = self._parse(name, snapshot)
            if isinstance(parsed, Flag):
                digest = content_hash(flag_content(snapshot.spec))
                revision = self.report.recorded_revision(snapshot.uid, digest)
                if revision is not None:
                    wanted = self._targets(namespace, snapshot, namespaces, fingerprint)
                    if target in wanted.accepted:
                        candidates.append(
                            Candidate(
                                namespace, name, snapshot.uid, definition(parsed), revision, digest
                            )
                        )
                        servable.add((namespace, name))
                    continue
            held = listing.get(name)
            if held and held.get("namespace") == namespace and held.get("uid") == snapshot.uid:
                carried = await self._carried(namespace, name, held, live_flags)
                if carried is not None:
                    candidates.append(carried)
        return candidates, servable

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
        except StoreUnavailable as exc:
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
        self,
        target: str,
        outcomes: dict[Key, P.TargetResult],
        servable: set[Key],
        about: Key | None,
    ) -> None:
        """Queue the other flags whose status no longer says what happened to them here (a new
        flag shadowing theirs, a foreign ConfigMap removed), so every flag's status is true."""
        for source, outcome in outcomes.items():
            if source == about or source not in servable:
                continue
            snapshot = self.world.flag(*source)
            if snapshot is None:
                continue
            reported = [
                t for t in snapshot.status.get("targets") or [] if t.get("namespace") == target
            ]
            if reported != [outcome.as_status()]:
                self.queue.add(QueueKey(KIND, *source))

    def _forget_served(self, target: str, served: set[Key]) -> None:
        for source, spots in self._served.items():
            if source not in served:
                spots.discard(target)
        for source in served:
            self._served.setdefault(source, set()).add(target)

    # ----------------------------------------------------------------------------- delete
    async def finalize(self, namespace: str, name: str, snapshot: Snapshot) -> None:
        """Take the flag out of every ``ferry-flags`` (deleting emptied ones), then let it go."""
        spots = self._held(namespace, name)
        if isinstance(self._parse(name, snapshot), Flag):
            spots |= set(self._targets(namespace, snapshot).accepted)
        for target in sorted(spots):
            await self._sync_namespace(target)  # a deleting flag is never a candidate
        await self.report.let_go(namespace, name, snapshot)
        self._drop(namespace, name, snapshot.uid)

    async def _gone(self, namespace: str, name: str) -> None:
        """The flag left the index (deleted, perhaps with its finalizer removed by hand): make
        sure no namespace still serves it."""
        for target in sorted(self._held(namespace, name)):
            await self._sync_namespace(target)
        self._drop(namespace, name, None)

    def _drop(self, namespace: str, name: str, uid: str | None) -> None:
        self._served.pop((namespace, name), None)
        if uid is None:  # gone from the index: its uid is whatever the listings named
            uid = next(
                (e.get("uid") for _, e in self._listings(name) if e.get("namespace") == namespace),
                None,
            )
        if uid is not None:
            self.report.forget(str(uid))
            self._parsed.forget(str(uid))
            self._plans.pop(str(uid), None)

    # ----------------------------------------------------------------------------- helpers
    def _parse(self, name: str, snapshot: Snapshot) -> Flag | Invalid:
        return self._parsed.get(name, snapshot)

    def _listings(self, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(target namespace, listing entry) of every ``ferry-flags`` that lists flag ``name``."""
        for target, store in list(self.flagsets.items()):
            for obj in store:
                if listed := (obj.get("flags") or {}).get(name):
                    yield target, listed

    def _held(self, namespace: str, name: str) -> set[str]:
        """Namespaces whose ``ferry-flags`` lists this flag (index), or where we just served it."""
        out = set(self._served.get((namespace, name), ()))
        out.update(t for t, listed in self._listings(name) if listed.get("namespace") == namespace)
        return out


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


def _observe(live: ConfigMap | None) -> P.Observed | None:
    """A live ``ferry-flags`` as placement sees it: Ferry's own only if labelled as a flag set."""
    if live is None:
        return None
    meta = live.metadata
    labels = dict((meta.labels if meta else None) or {})
    if labels.get(L.FLAGSET) != "true" or labels.get(L.MANAGED_BY) != L.MANAGED_BY_FERRY:
        return P.FOREIGN
    annotations = dict((meta.annotations if meta else None) or {})
    uid = str(meta.uid) if meta and meta.uid else None
    return P.Observed(True, content_hash(dict(live.data or {})), annotations, uid)


def _document_flags(data: Mapping[str, str]) -> dict[str, Any]:
    """The ``flags`` of a served flags.json, or {} if it is missing or unreadable."""
    try:
        document = json.loads(data.get(DATA_KEY) or "{}")
    except ValueError:
        return {}
    flags = document.get("flags") if isinstance(document, dict) else None
    return flags if isinstance(flags, dict) else {}
