"""Reconcile one ConfigSchema: is it a usable schema, and how many entries use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferry.adapters.kube import Kube
from ferry.domain.conditions import Condition, merge_conditions
from ferry.domain.entry import references
from ferry.domain.validation import check_schema
from ferry.reconcile.entries import now
from ferry.reconcile.world import World

KIND = "ConfigSchema"


@dataclass
class SchemaReconciler:
    world: World
    kube: Kube

    async def reconcile(self, namespace: str, name: str) -> None:
        schema = self.world.schema(namespace, name)
        if schema is None:
            return
        generation = schema["generation"]
        violations = check_schema(schema["spec"].get("schema"))
        used_by = sum(
            1 for spec in self.world.entry_specs(namespace).values() if references(spec)[0] == name
        )
        if violations:
            ready = Condition(
                "Ready", "False", "InvalidSchema", "; ".join(str(v) for v in violations), generation
            )
        else:
            ready = Condition("Ready", "True", "Valid", f"used by {used_by} entries", generation)
        current: dict[str, Any] = schema.get("status") or {}
        status = {
            "observedGeneration": generation,
            "usedBy": used_by,
            "conditions": merge_conditions(current.get("conditions"), [ready], now()),
        }
        if any(current.get(k) != v for k, v in status.items()):
            await self.kube.patch_status(KIND, namespace, name, status)
