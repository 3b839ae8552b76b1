"""The Argo CD health check in docs/argocd-health.md, run as Argo CD runs it (Lua 5.1, via lupa)
on Ferry objects read from the API server, and held against the kstatus library's verdict (what
Flux reads): the two tools must tell a user the same thing.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Operator
from tests.support import PAYMENTS, Kube, condition, entry, eventually, flag, get_or_none, schema

lupa = pytest.importorskip("lupa.lua51", reason="lupa (a test dependency) is not installed")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "argocd-health.md"
KINDS = ("ConfigEntry", "ConfigSchema", "FeatureFlag")
#: kstatus's verdict → Argo CD's: they must agree on every object Ferry has reported on.
AGREES = {
    "Current": "Healthy",
    "InProgress": "Progressing",
    "Failed": "Degraded",
    "Terminating": "Progressing",
}

HealthCheck = Callable[[dict[str, Any]], dict[str, str]]


@pytest.fixture(scope="module")
def health_checks() -> dict[str, HealthCheck]:
    """The argocd-cm snippet of the doc, as a user pastes it: one Lua health check per kind."""
    (block,) = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    data = yaml.safe_load(block)["data"]
    checks: dict[str, HealthCheck] = {}
    for kind in KINDS:
        source = data[f"resource.customizations.health.ferry.dev_{kind}"]

        def check(obj: dict[str, Any], source: str = source) -> dict[str, str]:
            runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
            runtime.globals().obj = runtime.table_from(obj, recursive=True)
            # Argo CD runs the script as a chunk with `obj` set and reads the returned table.
            result = runtime.execute(source)
            return {key: result[key] for key in ("status", "message")}

        checks[kind] = check
    return checks


@pytest.fixture(scope="module")
def kstatus() -> Callable[[list[dict[str, Any]]], list[dict[str, str]]]:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "tool-binaries.sh"), "kstatus"],
        capture_output=True,
        text=True,
        timeout=3000,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    binary = result.stdout.strip()

    def verdicts(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
        out = subprocess.run(
            [binary],
            input="\n".join(json.dumps(o) for o in objects),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [json.loads(line) for line in out.stdout.splitlines()]

    return verdicts


def variants(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An object as read, and as it reads at the other moments of its life: a new generation
    not yet seen, work in flight, stalled, being deleted."""

    def changed(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copied = copy.deepcopy(obj)
        change(copied)
        return copied

    def add_condition(type_: str, reason: str) -> Callable[[dict[str, Any]], None]:
        def change(o: dict[str, Any]) -> None:
            o["status"]["conditions"].insert(
                0, {"type": type_, "status": "True", "reason": reason, "message": f"{reason}!"}
            )

        return change

    def bump(o: dict[str, Any]) -> None:
        o["metadata"]["generation"] += 1

    def delete(o: dict[str, Any]) -> None:
        o["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"

    return {
        "as read": obj,
        "new generation": changed(bump),
        "reconciling": changed(add_condition("Reconciling", "Progressing")),
        "stalled": changed(add_condition("Stalled", "InvalidConfig")),
        "deleting": changed(delete),
    }


def test_argo_cd_and_kstatus_agree_on_objects_from_the_api_server(
    operator: Operator,
    kube: Kube,
    health_checks: dict[str, HealthCheck],
    kstatus: Callable[[list[dict[str, Any]]], list[dict[str, str]]],
) -> None:
    ns = kube.namespace("health")
    # A ConfigMap Ferry did not make, in the way of an entry that wants its name.
    kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "taken", "namespace": ns}}
    )
    kube.apply(
        schema("payments", ns, PAYMENTS),
        entry("ok", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 5}}}),
        entry("blocked", ns, {"data": {"a": 1}, "target": {"name": "taken"}}),
        flag("f", ns, {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}),
    )

    def reported(kind: str, name: str, ready: str) -> dict[str, Any] | None:
        obj = get_or_none(kube, kind, name, "-n", ns)
        seen = (condition(obj, "Ready") or {}).get("status") == ready and obj is not None
        return obj if seen and obj["status"].get("observedGeneration") else None

    objects = {
        "ok": eventually(lambda: reported("configentry", "ok", "True"), what="entry Ready"),
        "blocked": eventually(
            lambda: reported("configentry", "blocked", "False"), what="entry blocked"
        ),
        "schema": eventually(lambda: reported("configschema", "payments", "True"), what="schema"),
        "flag": eventually(lambda: reported("featureflag", "f", "True"), what="flag Ready"),
    }
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for label, obj in objects.items():
        cases = variants(obj)
        verdicts = kstatus(list(cases.values()))
        for (case, variant), by_kstatus in zip(cases.items(), verdicts, strict=True):
            by_argo = health_checks[obj["kind"]](variant)
            assert by_argo["status"] == AGREES[by_kstatus["status"]], (
                f"{label} {case}: Argo CD says {by_argo}, kstatus says {by_kstatus}"
            )
            seen[(label, case)] = (by_argo["status"], by_argo["message"])
    # What a user reads in Argo CD's UI.
    for label in ("ok", "schema", "flag"):
        assert seen[(label, "as read")][0] == "Healthy"
    blocked_status, blocked_message = seen[("blocked", "as read")]
    # Stalled=True (a foreign object in the way needs a human): kstatus says Failed, so Flux
    # and Argo CD fail with the reason at once instead of waiting out their timeout.
    assert blocked_status == "Degraded"
    assert "taken" in blocked_message, blocked_message
    assert seen[("ok", "stalled")] == ("Degraded", "InvalidConfig: InvalidConfig!")
    assert seen[("ok", "new generation")][0] == "Progressing"
    assert seen[("ok", "reconciling")] == ("Progressing", "Progressing: Progressing!")


def test_an_object_without_status_is_progressing_in_argo_cd(
    health_checks: dict[str, HealthCheck],
) -> None:
    """kstatus cannot tell (it says Current); Argo CD must not say Healthy before Ferry saw it."""
    fresh = entry("new", "ns", {"data": {}})
    fresh["metadata"]["generation"] = 1
    for kind in KINDS:
        assert health_checks[kind](fresh | {"kind": kind})["status"] == "Progressing"
