"""Reconcile one ConfigSchema: is it a usable schema, and how many entries use it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ferry.adapters.kube import Kube
from ferry.adapters.postgres import Store, StoreUnavailable
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.conditions import Condition, merge_conditions
from ferry.domain.entry import references
from ferry.domain.hashing import content_hash
from ferry.domain.jsonschema import TOO_COSTLY, is_too_costly
from ferry.reconcile import isolation, runner
from ferry.reconcile.reporting import now
from ferry.reconcile.workqueue import Requeue
from ferry.reconcile.world import Snapshot, World

KIND = kinds.CONFIG_SCHEMA.kind


@dataclass
class SchemaReconciler:
    world: World
    kube: Kube
    store: Store | None = None  # None: schemas are not recorded (history and export need it)

    async def reconcile(self, namespace: str, name: str) -> None:
        schema = self.world.schema(namespace, name)
        if schema is None:
            if self.store is not None:
                await self._record_deletion(namespace, name)
            return
        await runner.run(KIND, f"{namespace}/{name}", self.sync(namespace, name, schema))

    async def _record_deletion(self, namespace: str, name: str) -> None:
        """The row that tells history the schema is gone (`ferry export --at` would bring it
        back without it). Schemas carry no finalizer, so the deletion is only known while this
        process runs: retried with backoff while PostgreSQL is down (a restart meanwhile loses
        it, as it loses any event)."""
        assert self.store is not None
        try:
            await self.store.mark_deleted(KIND, namespace, name)
        except StoreUnavailable as exc:
            raise Requeue(f"recording the deletion of {namespace}/{name}: {exc}") from exc

    async def sync(self, namespace: str, name: str, schema: Snapshot) -> None:
        await self._record(namespace, name, schema)
        generation = schema.generation
        # In a worker process, bounded (ferry.reconcile.isolation): a schema stored while the
        # webhook was off may take long even to check.
        violations = await isolation.check_schema(
            schema.spec.get("schema"), tenant=namespace, name=name
        )
        used_by = sum(
            1 for spec in self.world.entry_specs(namespace).values() if references(spec)[0] == name
        )
        if violations:
            ready = Condition(
                "Ready",
                "False",
                TOO_COSTLY if any(is_too_costly(v) for v in violations) else "InvalidSchema",
                "; ".join(str(v) for v in violations),
                generation,
            )
        else:
            ready = Condition("Ready", "True", "Valid", f"used by {used_by} entries", generation)
        current = schema.status
        status = {
            "observedGeneration": generation,
            "usedBy": used_by,
            "conditions": merge_conditions(current.get("conditions"), [ready], now()),
        }
        if any(current.get(k) != v for k, v in status.items()):
            await self.kube.patch_status(KIND, namespace, name, status)

    async def _record(self, namespace: str, name: str, schema: Snapshot) -> None:
        """Keep every schema spec as a revision, so `ferry export --at` can rebuild schemas too.

        Recording never blocks the schema's status: the schema is not materialised anywhere, so
        a PostgreSQL outage only delays its history until the next event or resync.
        """
        if self.store is None:
            return
        spec = dict(schema.spec)
        with contextlib.suppress(StoreUnavailable):
            await self.store.record(
                kind=KIND,
                namespace=namespace,
                name=name,
                uid=schema.uid,
                content=spec,
                spec=spec,
                content_hash=content_hash(spec),
                changed_by=schema.annotations.get(L.CHANGED_BY),
                reason=schema.annotations.get(L.CHANGE_REASON),
            )
