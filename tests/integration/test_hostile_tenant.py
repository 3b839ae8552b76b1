"""A hostile tenant against the real stack (issue 11): what it tries, and what everyone else sees.

Each test plays one attack from docs/security.md's threat model and checks what a user would:
the bystander's writes are admitted and reconciled, the attacker's own objects say what happened
(ValidationTooCostly naming the schema, NameConflict, Conflict), nothing anyone else made is
overwritten, and no change reaches a workload without its revision row. The forged
AdmissionReview (refused at TLS) is ``test_webhook_trust.py``'s; ``reload-on`` from another
source is ``test_entries.py::test_reload_on_names_the_source_namespace_for_entries_from_elsewhere``.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from ferry.adapters.kube import Kube as KubeAdapter
from ferry.adapters.kube import make_client
from ferry.domain import labels as L
from ferry.domain.hashing import content_hash
from ferry.domain.placement import Desired, Observed
from ferry.reconcile.placement import Placer
from tests.integration.conftest import Operator
from tests.support import (
    PAYMENTS,
    Kube,
    condition,
    entry,
    eventually,
    flag,
    get_or_none,
    schema,
)

pytestmark = pytest.mark.integration

#: Within the complexity budget (900 branches, fan-out under 1,000), so admitted even with
#: ``compatibility: Backward``; but ~10 ms of work per list item that matches no branch.
COSTLY_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "anyOf": [{"type": "string", "pattern": f"^x{i}-[a-z]+$"} for i in range(900)]
            },
        }
    },
}


def costly_data(n: int = 0) -> dict[str, Any]:
    """About 15 KB: seconds of work against COSTLY_SCHEMA, nothing against a plain object."""
    return {"items": [f"nothing-matches-{n}-{i}" for i in range(1000)]}


def ready(kube: Kube, ns: str, name: str, generation: int | None = None) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_or_none(kube, "configentry", name, "-n", ns)
        found = condition(obj, "Ready")
        if found is None or found["status"] != "True":
            return None
        if generation is not None and obj["status"].get("observedGeneration") != generation:
            return None
        return obj  # type: ignore[no-any-return]

    return eventually(probe, timeout=60, what=f"ConfigEntry {ns}/{name} Ready")


def configmap_data(kube: Kube, ns: str, name: str) -> dict[str, str] | None:
    cm = get_or_none(kube, "configmap", name, "-n", ns)
    return None if cm is None else dict(cm.get("data") or {})


@pytest.fixture
def flood(kube: Kube) -> Iterator[Any]:
    """Start admission requests for costly entries in a namespace, back to back from several
    threads, until the test ends; yields a function that starts them and returns the answers."""
    stop = threading.Event()
    answers: list[str] = []
    threads: list[threading.Thread] = []

    def start(ns: str, workers: int = 3) -> list[str]:
        def loop(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                body = entry(
                    f"flood-{worker}",
                    ns,
                    {"schemaRef": {"name": "shape"}, "data": costly_data(worker * 100_000 + n)},
                )
                result = kube.apply(body, check=False)
                answers.append(result.stderr.strip() or result.stdout.strip())

        for worker in range(workers):
            thread = threading.Thread(target=loop, args=(worker,), daemon=True)
            thread.start()
            threads.append(thread)
        return answers

    try:
        yield start
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)


def test_a_costly_schema_stalls_nothing_but_its_own_entries(
    kube: Kube, operator: Operator, flood: Any
) -> None:
    hostile = kube.namespace("hostile")
    bystander = kube.namespace("bystander")
    kube.apply(schema("shape", hostile, {"type": "object"}))
    kube.apply(entry("big", hostile, {"schemaRef": {"name": "shape"}, "data": costly_data()}))
    kube.apply(
        schema("payments", bystander, PAYMENTS),
        entry(
            "api", bystander, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 1}}}
        ),
    )
    ready(kube, hostile, "big")
    ready(kube, bystander, "api")
    before = configmap_data(kube, hostile, "big")

    # The attack: a schema within every budget, stored without a compatibility check, that
    # asks seconds of work of every value of the entry that uses it; then costly writes, back to
    # back, from several clients at once.
    stored = kube.apply(schema("shape", hostile, COSTLY_SCHEMA, compatibility="None"))
    assert stored.returncode == 0
    answers = flood(hostile)

    # The attacker's entry: Valid=False, ValidationTooCostly, naming the schema; what it had
    # materialised stays.
    def too_costly() -> dict[str, Any] | None:
        found = condition(get_or_none(kube, "configentry", "big", "-n", hostile), "Valid")
        return found if found and found["reason"] == "ValidationTooCostly" else None

    valid = eventually(too_costly, timeout=90, what="big: Valid=False ValidationTooCostly")
    assert valid["status"] == "False"
    assert 'ConfigSchema "shape"' in valid["message"]
    assert configmap_data(kube, hostile, "big") == before

    # Meanwhile every other namespace is admitted, checked and reconciled as usual.
    eventually(lambda: len(answers) >= 3, timeout=60, what="the flood under way")
    kube.apply(
        entry(
            "api", bystander, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 2}}}
        )
    )
    kube.apply(
        entry(
            "worker",
            bystander,
            {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 3}}},
        )
    )
    refused = kube.apply(
        entry(
            "api", bystander, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 500}}}
        ),
        check=False,
    )
    assert refused.returncode != 0
    assert "spec.data.db.poolSize: 500 is greater than the maximum of 100" in refused.stderr
    updated = ready(kube, bystander, "api", generation=2)
    assert updated["status"]["revision"] == 2
    assert json.loads(configmap_data(kube, bystander, "api")["config.json"]) == {
        "db": {"poolSize": 2}
    }
    ready(kube, bystander, "worker")
    with urllib.request.urlopen(f"{operator.api_url}/readyz", timeout=10) as response:
        assert response.status == 200

    # Every costly write was refused with a reason, never by the API server giving up on the
    # webhook ("failed calling webhook ... context deadline exceeded").
    seen = list(answers)
    assert seen, "no flood request finished"
    for answer in seen:
        assert "denied the request" in answer, answer
        assert "ValidationTooCostly" in answer or "validation workers are busy" in answer, answer
    assert any('ConfigSchema "shape": ValidationTooCostly' in a for a in seen)


def test_a_forged_status_does_not_skip_recording(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    """Whoever may patch the status subresource writes the next content's hash there, as if it
    were recorded; the operator restarts (nothing in its memory), then the content changes: the
    revision row and its audit row are written before the ConfigMap changes."""
    ns = kube.namespace("forge")
    kube.apply(entry("app", ns, {"data": {"mode": "one"}}))
    first = ready(kube, ns, "app")
    assert first["status"]["revision"] == 1
    next_data = {"mode": "two"}
    forged = {"status": {"hash": content_hash(next_data), "revision": 2}}
    kube.kubectl(
        "patch",
        "configentry",
        "app",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(forged),
    )
    operator.kill()
    operator.start()

    kube.apply(entry("app", ns, {"data": next_data}))

    eventually(
        lambda: (
            json.loads((configmap_data(kube, ns, "app") or {}).get("config.json", "{}"))
            == next_data
        ),
        timeout=60,
        what="the new content materialised",
    )
    with psycopg.connect(database_url) as conn:
        revisions = conn.execute(
            "SELECT revision, hash FROM revisions WHERE kind='ConfigEntry' AND namespace=%s "
            "AND name='app' ORDER BY revision",
            (ns,),
        ).fetchall()
        audited = conn.execute(
            "SELECT revision FROM audit_log WHERE kind='ConfigEntry' AND namespace=%s "
            "AND name='app' AND revision IS NOT NULL ORDER BY revision",
            (ns,),
        ).fetchall()
    assert [(r, h) for r, h in revisions] == [
        (1, content_hash({"mode": "one"})),
        (2, content_hash(next_data)),
    ]
    assert [r for (r,) in audited] == [1, 2]
    cm = get_or_none(kube, "configmap", "app", "-n", ns)
    assert cm["metadata"]["annotations"][L.REVISION] == "2"


def test_a_source_cannot_take_over_a_flag_name_another_source_serves(
    kube: Kube, operator: Operator
) -> None:
    target = kube.namespace("shared", labels={"ferry.dev/accept": "true"})
    zeta = kube.namespace("zeta-src")
    alpha = kube.namespace("alpha-src")  # sorts first: it used to win
    spec: dict[str, Any] = {
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "target": {"namespaces": [target]},
    }
    kube.apply(flag("checkout", zeta, spec))

    def served_from() -> str | None:
        cm = get_or_none(kube, "configmap", "ferry-flags", "-n", target)
        if cm is None:
            return None
        listing = json.loads(cm["metadata"]["annotations"]["ferry.dev/flags"])
        return str(listing["checkout"]["namespace"])

    eventually(lambda: served_from() == zeta, what="zeta's checkout served")
    served_before = configmap_data(kube, target, "ferry-flags")
    kube.apply(flag("checkout", alpha, {**spec, "defaultVariant": "on"}))

    def target_line(ns: str) -> dict[str, Any] | None:
        obj = get_or_none(kube, "featureflag", "checkout", "-n", ns)
        lines = {t["namespace"]: t for t in (obj or {}).get("status", {}).get("targets", [])}
        found = lines.get(target)
        return found if found and found.get("reason") == "NameConflict" else None

    newcomer = eventually(lambda: target_line(alpha), what="the newcomer's NameConflict")
    incumbent = eventually(lambda: target_line(zeta), what="the incumbent's NameConflict")
    assert newcomer["synced"] is False and f"FeatureFlag {zeta}/checkout" in newcomer["message"]
    assert incumbent["synced"] is True and f"{alpha}/checkout" in incumbent["message"]
    assert served_from() == zeta
    assert configmap_data(kube, target, "ferry-flags") == served_before


async def test_a_configmap_made_in_the_race_window_is_never_overwritten(kube: Kube) -> None:
    """Placement against the real API server with a stale view, as when the indexes lag: a
    ConfigMap someone made after Ferry looked, or one made in place of Ferry's own, stays."""
    ns = kube.namespace("race")
    adapter = KubeAdapter(make_client(str(kube.kubeconfig)))
    placer = Placer(adapter)
    labels = {L.MANAGED_BY: L.MANAGED_BY_FERRY, L.ENTRY_UID: "entry-uid"}

    def desired(name: str, data: dict[str, str]) -> Desired:
        return Desired("ConfigMap", ns, name, data, labels, {L.RENDERED_HASH: "sha256:x"})

    async def data_of(name: str) -> dict[str, str]:
        found = await adapter.client.get(ConfigMap, name, namespace=ns)
        return dict(found.data or {})

    try:
        # The index saw nothing under "app"; a tenant made one since.
        await adapter.client.create(
            ConfigMap(metadata=ObjectMeta(name="app", namespace=ns), data={"theirs": "1"}),
            field_manager="tenant",
        )
        placed = await placer.place(desired("app", {"ours": "1"}), None, sources=[])
        assert placed.failure is not None and placed.failure.reason == "Conflict"
        assert await data_of("app") == {"theirs": "1"}

        # Ferry's own: created, then updated on that very object (keys not rendered go).
        made = await placer.place(desired("own", {"a": "1"}), None, sources=[])
        assert made.failure is None and made.uid
        known = Observed(True, "sha256:old", {}, made.uid)
        again = await placer.place(desired("own", {"b": "2"}), known, sources=[])
        assert again.failure is None and await data_of("own") == {"b": "2"}

        # Deleted and made again by a tenant while the index still shows Ferry's: neither
        # the update nor the delete touches it.
        await adapter.client.delete(ConfigMap, "own", namespace=ns)
        await adapter.client.create(
            ConfigMap(metadata=ObjectMeta(name="own", namespace=ns), data={"theirs": "2"}),
            field_manager="tenant",
        )
        stale = await placer.place(desired("own", {"b": "3"}), known, sources=[])
        assert stale.failure is not None and stale.failure.reason == "Conflict"
        assert not await placer.remove("ConfigMap", ns, "own", uid=made.uid)
        assert not await placer.remove("ConfigMap", ns, "own")  # not labelled as Ferry's
        assert await data_of("own") == {"theirs": "2"}

        # Labelled as Ferry's for this entry (a create whose answer was lost): taken over.
        await adapter.client.create(
            ConfigMap(metadata=ObjectMeta(name="lost", namespace=ns, labels=labels), data={}),
            field_manager="ferry",
        )
        taken = await placer.place(desired("lost", {"c": "3"}), None, sources=[])
        assert taken.failure is None and await data_of("lost") == {"c": "3"}
    finally:
        await adapter.close()


def test_an_entry_and_a_configmap_of_its_name_created_together(
    kube: Kube, operator: Operator
) -> None:
    """The same race end to end: the ConfigMap and the entry in one `kubectl create`, so the
    entry's first reconcile may run before the operator's index has heard of the ConfigMap."""
    ns = kube.namespace("race-e2e")
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": ns},
        "data": {"theirs": "1"},
    }
    kube.create(foreign, entry("app", ns, {"data": {"ours": 1}}))

    def conflict() -> dict[str, Any] | None:
        obj = get_or_none(kube, "configentry", "app", "-n", ns)
        lines = (obj or {}).get("status", {}).get("targets", [])
        return next((t for t in lines if t.get("reason") == "Conflict"), None)

    line = eventually(conflict, timeout=60, what="the entry reporting the Conflict")
    assert line["synced"] is False and line["namespace"] == ns
    assert configmap_data(kube, ns, "app") == {"theirs": "1"}
