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
from tests.hostile_inputs import COSTLY_SCHEMA, costly_data
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


class Flood:
    """Admission requests for costly entries in a namespace, back to back from several threads,
    until stopped (at the latest when the test ends); ``answers`` collects what each got."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.answers: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, ns: str, workers: int = 3) -> None:
        def loop(worker: int) -> None:
            n = 0
            while not self._stop.is_set():
                n += 1
                data = costly_data(worker * 100_000 + n)
                body = entry(f"flood-{worker}", ns, {"schemaRef": {"name": "shape"}, "data": data})
                result = self.kube.apply(body, check=False)
                self.answers.append(result.stderr.strip() or result.stdout.strip())

        for worker in range(workers):
            thread = threading.Thread(target=loop, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


@pytest.fixture
def flood(kube: Kube) -> Iterator[Flood]:
    running = Flood(kube)
    try:
        yield running
    finally:
        running.stop()


def test_a_costly_schema_stalls_nothing_but_its_own_entries(
    kube: Kube, operator: Operator, flood: Flood
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
    flood.start(hostile)

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
    eventually(lambda: len(flood.answers) >= 3, timeout=60, what="the flood under way")
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
    # webhook ("failed calling webhook ... context deadline exceeded"): ValidationTooCostly,
    # or, waiting behind the namespace's own other requests, "could not be checked in time".
    flood.stop()
    assert flood.answers, "no flood request finished"
    for answer in flood.answers:
        assert "denied the request" in answer, answer
        assert "ValidationTooCostly" in answer or "could not be checked in time" in answer, answer

    # A costly write on its own (once the namespace's worker is back) gets the whole limit,
    # and the verdict naming the schema.
    def alone() -> str | None:
        body = entry("one-more", hostile, {"schemaRef": {"name": "shape"}, "data": costly_data(-1)})
        result = kube.apply(body, check=False)
        assert result.returncode != 0
        return result.stderr if "ValidationTooCostly" in result.stderr else None

    verdict = eventually(alone, timeout=60, what="a costly write's own verdict")
    assert 'spec.schemaRef.name: ConfigSchema "shape": ValidationTooCostly: validating this ' in (
        verdict
    )


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


def test_an_entry_never_writes_over_another_sources_object_of_the_same_name(
    kube: Kube, operator: Operator
) -> None:
    """Two tenants' entries of one name, both accepted by a shared namespace: the first one's
    ConfigMap there stays the first one's (content and owner label), and the second reports the
    Conflict — also right after the first was written, while the operator still remembers that
    write (it once took that memory for the second entry's own)."""
    shared = kube.namespace("shared-name", labels={"ferry.dev/accept": "true"})
    first, second = kube.namespace("first-src"), kube.namespace("second-src")
    kube.apply(entry("app", first, {"data": {"db": "first"}, "target": {"namespaces": [shared]}}))
    ready(kube, first, "app")
    owner = kube.get_json("configentry", "app", "-n", first)["metadata"]["uid"]
    before = configmap_data(kube, shared, "app")
    assert before is not None and json.loads(before["config.json"]) == {"db": "first"}

    kube.apply(entry("app", second, {"data": {"db": "evil"}, "target": {"namespaces": [shared]}}))

    def conflict() -> dict[str, Any] | None:
        obj = get_or_none(kube, "configentry", "app", "-n", second)
        lines = (obj or {}).get("status", {}).get("targets", [])
        return next((t for t in lines if t.get("namespace") == shared), None)

    line = eventually(conflict, timeout=60, what="the second entry's line for the shared target")
    assert line["synced"] is False and line["reason"] == "Conflict", line
    cm = kube.get_json("configmap", "app", "-n", shared)
    assert cm["data"] == before
    assert cm["metadata"]["labels"][L.ENTRY_UID] == owner
    assert cm["metadata"]["annotations"][L.ENTRY_NAMESPACE] == first


def test_refused_targets_are_summarised_and_reported_once_per_change(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    """An entry selecting many namespaces that do not accept it: status counts them and names
    the first ten; one Event and one audit row per change of that set, none after a restart."""
    src = kube.namespace("wide")
    mark = f"wide-{src[-8:]}"
    refusing = sorted(kube.namespace("nope", labels={"sel": mark}) for _ in range(12))
    kube.apply(
        entry(
            "shared",
            src,
            {"data": {"k": "v"}, "target": {"namespaceSelector": {"matchLabels": {"sel": mark}}}},
        )
    )

    def summary(count: int) -> dict[str, Any] | None:
        obj = get_or_none(kube, "configentry", "shared", "-n", src)
        found = (obj or {}).get("status", {}).get("refusedTargets")
        return obj if found and found["count"] == count else None

    obj = eventually(lambda: summary(12), timeout=60, what="12 refusals summarised")
    assert obj["status"]["refusedTargets"]["first"] == refusing[:10]
    assert obj["status"]["targets"] == []  # no line per refusal
    assert condition(obj, "Ready")["status"] == "True"  # a refusal is the namespace's choice

    def reported() -> tuple[int, int]:
        events = kube.get_json(
            "events",
            "-n",
            src,
            "--field-selector",
            "involvedObject.name=shared,reason=TargetRefused",
        )["items"]
        with psycopg.connect(database_url) as conn:
            (rows,) = conn.execute(
                "SELECT count(*) FROM audit_log WHERE action='target-refused' AND namespace=%s "
                "AND name='shared'",
                (src,),
            ).fetchone()
        return len(events), rows

    eventually(lambda: reported() == (1, 1), what="one Event and one audit row")
    event = kube.get_json(
        "events", "-n", src, "--field-selector", "involvedObject.name=shared,reason=TargetRefused"
    )["items"][0]
    assert event["message"].endswith(f'and 2 more do not accept entries from "{src}"')

    # A restart reconciles everything again: the set is unchanged, so nothing new is said.
    operator.kill()
    operator.start()
    kube.namespace("nope", labels={"sel": mark})  # then the set changes: said once more
    eventually(lambda: summary(13), timeout=60, what="13 refusals summarised")
    eventually(lambda: reported() == (2, 2), what="a second Event and audit row")


def test_lists_past_the_crd_bounds_are_refused_by_the_api_server(kube: Kube) -> None:
    """Bounds checked by the API server itself, before any webhook or the operator sees them."""
    ns = kube.namespace("bounds")
    too_many = [f"ns-{i}" for i in range(257)]
    refused = kube.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(entry("wide", ns, {"data": {}, "target": {"namespaces": too_many}})),
        check=False,
    )
    assert refused.returncode != 0
    assert "spec.target.namespaces: Too many: 257: must have at most 256 items" in refused.stderr
    rules = [{"variant": "on"}] * 257
    spec = {"variants": {"on": True}, "defaultVariant": "on", "targeting": rules}
    refused = kube.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(flag("many", ns, spec)),
        check=False,
    )
    assert refused.returncode != 0
    assert "spec.targeting: Too many: 257: must have at most 256 items" in refused.stderr
