"""FeatureFlags on the real API server, PostgreSQL and Redis: served as ``ferry-flags``, recorded,
evaluated identically by the CLI, the HTTP API and the library.

Each test checks what a user would: the ``ferry-flags`` ConfigMap in each target namespace (and
its ``flags.json`` against flagd's published schema), the flag's status, the revision rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from ferry.domain.flags import evaluate, parse_flag, to_flagd
from tests.integration.conftest import Operator
from tests.integration.test_serve import Serve, serve  # noqa: F401 (a fixture)
from tests.integration.webhook_client import validating_webhook_off
from tests.support import Kube, condition, eventually, get_or_none, manifest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "tests" / "data" / "flagd"

CHECKOUT: dict[str, Any] = {
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": [
        {
            "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
            "variant": "on",
        },
        {
            "when": [{"attribute": "region", "op": "in", "values": ["eu-west-1"]}],
            "split": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
        },
    ],
}


@pytest.fixture(scope="module")
def flagd_schema() -> Draft7Validator:
    """flagd's flag-definition schema; targeting.json resolved from disk, nothing fetched."""
    docs = [json.loads((SCHEMA_DIR / n).read_text()) for n in ("flags.json", "targeting.json")]
    registry: Registry = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT7)) for doc in docs
    )
    return Draft7Validator(docs[0], registry=registry)


def flag(name: str, ns: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return manifest("FeatureFlag", name, ns, spec, **meta)


def served(kube: Kube, ns: str) -> dict[str, Any] | None:
    """The ``ferry-flags`` ConfigMap of ``ns`` as {"document", "listing", "labels"}, or None."""
    cm = get_or_none(kube, "configmap", "ferry-flags", "-n", ns)
    if cm is None:
        return None
    return {
        "document": json.loads(cm["data"]["flags.json"]),
        "listing": json.loads(cm["metadata"]["annotations"]["ferry.dev/flags"]),
        "labels": cm["metadata"].get("labels") or {},
        "data": cm["data"],
    }


def served_flags(kube: Kube, ns: str) -> set[str]:
    cm = served(kube, ns)
    return set() if cm is None else set(cm["document"]["flags"])


def wait_ready(kube: Kube, ns: str, name: str, generation: int | None = None) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_or_none(kube, "featureflag", name, "-n", ns)
        ready = condition(obj, "Ready")
        if ready is None or ready["status"] != "True":
            return None
        if generation is not None and ready.get("observedGeneration") != generation:
            return None
        return obj  # type: ignore[no-any-return]

    return eventually(probe, timeout=30, what=f"FeatureFlag {ns}/{name} Ready")


def revisions(database_url: str, ns: str, name: str) -> list[tuple[int, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT revision, hash FROM revisions WHERE kind='FeatureFlag' "
            "AND namespace=%s AND name=%s ORDER BY revision",
            (ns, name),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def schema_errors(validator: Draft7Validator, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


# ------------------------------------------------------------------------------ materialise
def test_flag_is_served_in_its_own_and_an_accepting_namespace_and_passes_flagd_schema(
    kube: Kube, operator: Operator, redis_url: str, flagd_schema: Draft7Validator
) -> None:
    src = kube.namespace("ff-src")
    accepting = kube.namespace("ff-acc", labels={"ferry.dev/accept": "true"})
    refusing = kube.namespace("ff-ref")
    kube.apply(
        flag(
            "new-checkout", src, {**CHECKOUT, "target": {"namespaces": [src, accepting, refusing]}}
        )
    )

    obj = wait_ready(kube, src, "new-checkout")
    # `kubectl wait` works on the same condition (Kubernetes conventions).
    kube.kubectl("wait", "--for=condition=Ready", "ff/new-checkout", "-n", src, "--timeout=10s")

    expected = to_flagd({"new-checkout": parse_flag("new-checkout", CHECKOUT)})
    for ns in (src, accepting):
        cm = served(kube, ns)
        assert cm is not None, ns
        assert cm["document"] == expected
        assert schema_errors(flagd_schema, cm["document"]) == []
        assert cm["labels"]["app.kubernetes.io/managed-by"] == "ferry"
        assert cm["listing"]["new-checkout"]["namespace"] == src
        assert cm["listing"]["new-checkout"]["revision"] == obj["status"]["revision"] == 1
    assert get_or_none(kube, "configmap", "ferry-flags", "-n", refusing) is None

    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["hash"].startswith("sha256:")
    # The generation its users are bucketed with is recorded with the first revision (0014).
    assert status["bucketing"] == "flagd-v3"
    by_ns = {t["namespace"]: t for t in status["targets"]}
    assert by_ns[src]["synced"] is True and by_ns[accepting]["synced"] is True
    assert refusing not in by_ns  # refusals are summarised, not listed one by one (issue 11)
    assert status["refusedTargets"] == {
        "count": 1,
        "first": [refusing],
        "digest": status["refusedTargets"]["digest"],
    }
    eventually(  # Events are sent after the reconcile's writes
        lambda: (
            "TargetRefused"
            in {
                e["reason"]
                for e in kube.get_json("events", "-n", src)["items"]
                if e["involvedObject"]["name"] == "new-checkout"
            }
        ),
        what="a TargetRefused Event",
    )
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Valid": "True",
        "Recorded": "True",
        "Synced": "True",
        "Cached": "True",
        "Ready": "True",
    }  # kstatus' Reconciling and Stalled are present only while True
    assert "ferry.dev/cleanup" in obj["metadata"]["finalizers"]
    cached = json.loads(redis.Redis.from_url(redis_url).get(f"ferry:flags:{accepting}") or "{}")
    assert cached["document"] == expected


def test_selector_targeted_flag_leaves_a_namespace_that_stops_matching(
    kube: Kube, operator: Operator
) -> None:
    src = kube.namespace("ff-src")
    team = f"team-{src[-8:]}"
    a = kube.namespace("ff-a", labels={"team": team, "ferry.dev/accept": "true"})
    b = kube.namespace("ff-b", labels={"team": team, "ferry.dev/accept": "true"})
    kube.apply(
        flag(
            "beta",
            src,
            {**CHECKOUT, "target": {"namespaceSelector": {"matchLabels": {"team": team}}}},
        ),
        flag("local", b, {"variants": {"x": 1, "y": 2}, "defaultVariant": "x"}),
    )

    eventually(lambda: served_flags(kube, a) == {"beta"}, what="beta served in a")
    eventually(lambda: served_flags(kube, b) == {"beta", "local"}, what="beta+local in b")

    kube.kubectl("label", "namespace", b, "team-")

    eventually(lambda: served_flags(kube, b) == {"local"}, what="beta gone from b")
    assert served_flags(kube, a) == {"beta"}
    obj = eventually(
        lambda: (
            (o := wait_ready(kube, src, "beta"))
            and {t["namespace"] for t in o["status"]["targets"]} == {a}
            and o
        ),
        what="beta's status lists only a",
    )
    assert obj["status"]["targets"] == [{"namespace": a, "synced": True}]

    kube.kubectl("label", "namespace", a, "team-")

    # No flag is left in a: its ferry-flags goes.
    eventually(
        lambda: get_or_none(kube, "configmap", "ferry-flags", "-n", a) is None,
        what="a's CM deleted",
    )


def test_same_flag_name_from_two_namespaces_is_a_conflict_and_the_served_one_keeps_its_name(
    kube: Kube, operator: Operator
) -> None:
    """First come, first served (issue 11): a same-named flag arriving later, even the target
    namespace's own, is refused and reported on both; it is served once the first one goes."""
    target = kube.namespace("ff-tgt", labels={"ferry.dev/accept": "true"})
    other = kube.namespace("ff-oth")
    kube.apply(flag("dark-mode", other, {**CHECKOUT, "target": {"namespaces": [target]}}))
    first = wait_ready(kube, other, "dark-mode")
    served_before = served(kube, target)
    assert served_before is not None
    kube.apply(flag("dark-mode", target, {"variants": {"a": "A", "b": "B"}, "defaultVariant": "b"}))

    def newcomer_reports() -> dict[str, Any] | None:
        obj = get_or_none(kube, "featureflag", "dark-mode", "-n", target)
        t = {x["namespace"]: x for x in (obj or {}).get("status", {}).get("targets", [])}
        found = t.get(target) or {}
        return found if found.get("reason") == "NameConflict" else None

    refused = eventually(newcomer_reports, what="NameConflict on the newcomer")
    assert refused["synced"] is False
    assert f"is served from FeatureFlag {other}/dark-mode" in refused["message"]
    assert (
        condition(get_or_none(kube, "featureflag", "dark-mode", "-n", target), "Ready")["status"]
        == "False"
    )

    def incumbent_reports() -> dict[str, Any] | None:
        obj = get_or_none(kube, "featureflag", "dark-mode", "-n", other)
        t = {x["namespace"]: x for x in obj["status"].get("targets", [])}.get(target) or {}
        return t if t.get("reason") == "NameConflict" else None

    kept = eventually(incumbent_reports, what="NameConflict on the flag served first")
    assert kept["synced"] is True and f"{target}/dark-mode" in kept["message"]
    assert (
        condition(get_or_none(kube, "featureflag", "dark-mode", "-n", other), "Ready")["status"]
        == "True"
    )
    # What the namespace serves did not change at all: same source, same definition, same uid.
    now = served(kube, target)
    assert now is not None and now["data"] == served_before["data"]
    assert now["listing"]["dark-mode"]["uid"] == first["metadata"]["uid"]

    # The first one goes: the newcomer is served, and says so.
    kube.kubectl("delete", "featureflag", "dark-mode", "-n", other)
    eventually(
        lambda: (
            (cm := served(kube, target)) is not None
            and cm["listing"]["dark-mode"]["namespace"] == target
        ),
        what="the target's own dark-mode served once the other is gone",
    )
    won = wait_ready(kube, target, "dark-mode")["status"]["targets"]
    assert won == [{"namespace": target, "synced": True}]


# ------------------------------------------------------------------------------ revisions, validity
def test_revisions_are_recorded_only_when_the_flag_content_changes(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    ns = kube.namespace("ff-rev")
    peer = kube.namespace("ff-peer", labels={"ferry.dev/accept": "true"})
    kube.apply(flag("rollout", ns, CHECKOUT))
    first = wait_ready(kube, ns, "rollout")
    assert revisions(database_url, ns, "rollout") == [(1, first["status"]["hash"])]

    # Same content, now also served in `peer`, with an explicit default: no new revision.
    kube.apply(
        flag("rollout", ns, {**CHECKOUT, "state": "ENABLED", "target": {"namespaces": [ns, peer]}})
    )
    again = wait_ready(kube, ns, "rollout", generation=first["metadata"]["generation"] + 1)
    assert again["status"]["revision"] == 1
    eventually(lambda: served_flags(kube, peer) == {"rollout"}, what="rollout in peer")
    assert revisions(database_url, ns, "rollout") == [(1, first["status"]["hash"])]

    changed = {**CHECKOUT, "defaultVariant": "on", "target": {"namespaces": [ns, peer]}}
    kube.apply(flag("rollout", ns, changed))
    third = wait_ready(kube, ns, "rollout", generation=again["metadata"]["generation"] + 1)
    assert third["status"]["revision"] == 2
    assert [r for r, _ in revisions(database_url, ns, "rollout")] == [1, 2]
    for target in (ns, peer):
        cm = eventually(
            lambda t=target: (
                (c := served(kube, t)) and c["listing"]["rollout"]["revision"] == 2 and c
            ),
            what=f"revision 2 served in {target}",
        )
        assert cm["document"]["flags"]["rollout"]["defaultVariant"] == "on"


def test_invalid_flag_is_refused_and_if_stored_anyway_reported_with_served_flags_kept(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    """Two lines of defence, both asserted. With the admission webhook in force an invalid flag
    (one that passes the CRD schema) is refused, naming every violation. A flag can still be
    stored invalid while the webhook is off (a cluster admin switched it off, or the flag
    predates it); then the reconciler reports Valid=False naming every
    violation, records no revision, and keeps serving the last valid definition, even when the
    namespace's ``ferry-flags`` is re-rendered for another flag."""
    ns = kube.namespace("ff-bad")
    kube.apply(flag("guarded", ns, CHECKOUT))
    good = wait_ready(kube, ns, "guarded")
    before = served(kube, ns)
    assert before is not None
    bad = {
        **CHECKOUT,
        "defaultVariant": "maybe",
        "targeting": [
            {"when": [{"attribute": "email", "op": "resembles", "value": "x"}], "variant": "on"}
        ],
    }

    refused = kube.apply(flag("guarded", ns, bad), check=False)
    assert refused.returncode != 0
    assert "spec.defaultVariant" in refused.stderr
    assert "spec.targeting[0].when[0].op" in refused.stderr

    with validating_webhook_off(kube):
        kube.apply(flag("guarded", ns, bad))  # no validating webhook now: stored as it is

    def invalid() -> dict[str, Any] | None:
        obj = get_or_none(kube, "featureflag", "guarded", "-n", ns)
        valid = condition(obj, "Valid")
        return obj if valid and valid["status"] == "False" else None

    obj = eventually(invalid, what="Valid=False")
    message = condition(obj, "Valid")["message"]
    assert "spec.defaultVariant" in message
    assert "spec.targeting[0].when[0].op" in message
    assert condition(obj, "Ready")["status"] == "False"
    assert condition(obj, "Valid")["observedGeneration"] == obj["metadata"]["generation"]

    kube.apply(flag("neighbour", ns, {"variants": {"a": "A"}, "defaultVariant": "a"}))
    wait_ready(kube, ns, "neighbour")
    after = served(kube, ns)
    assert after is not None
    assert after["document"]["flags"]["guarded"] == before["document"]["flags"]["guarded"]
    assert after["listing"]["guarded"] == before["listing"]["guarded"]
    assert revisions(database_url, ns, "guarded") == [(1, good["status"]["hash"])]


# ------------------------------------------------------------------------------ evaluation
def test_cli_and_http_evaluation_equal_the_library(
    kube: Kube, operator: Operator, request: pytest.FixtureRequest
) -> None:
    read_api: Serve = request.getfixturevalue("serve")  # test_serve's `ferry serve`
    ns = kube.namespace("ff-eval")
    kube.apply(flag("new-checkout", ns, CHECKOUT))
    wait_ready(kube, ns, "new-checkout")
    library = parse_flag("new-checkout", CHECKOUT)
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    # Over HTTP: OFREP on `ferry serve`, as an app's OpenFeature provider asks (authenticated).
    token = read_api.account(ns, "app", ["featureflags"])

    def ofrep(name: str, context: dict[str, Any]) -> tuple[int, Any]:
        status, _, body = read_api.request(
            "POST", f"/ofrep/v1/evaluate/flags/{name}", token=token, body={"context": context}
        )
        return status, body

    eventually(lambda: ofrep("new-checkout", {})[0] == 200, timeout=30, what="flags served")

    cases: list[tuple[str | None, list[str], dict[str, Any]]] = [
        ("user-1", ["email=ann@example.com"], {"email": "ann@example.com"}),
        ("user-7", ["region=eu-west-1", "seats=12"], {"region": "eu-west-1", "seats": 12}),
        (None, ["region=eu-west-1"], {"region": "eu-west-1"}),
    ]
    for key, attrs, context in cases:
        want = evaluate(library, key, context)
        expected = {"variant": want.variant, "value": want.value, "reason": str(want.reason)}

        argv = [sys.executable, "-m", "ferry", "flags", "eval", f"{ns}/new-checkout", "-o", "json"]
        argv += ["--targeting-key", key] if key is not None else []
        for a in attrs:
            argv += ["--attr", a]
        cli = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
        assert cli.returncode == 0, cli.stderr
        printed = json.loads(cli.stdout)
        assert {k: printed[k] for k in expected} == expected, (key, attrs)
        assert printed["revision"] == 1

        asked = {**context, **({"targetingKey": key} if key else {})}
        status, answered = ofrep("new-checkout", asked)
        assert status == 200, answered
        assert {k: answered[k] for k in expected} == expected, (key, attrs)

    human = subprocess.run(
        [sys.executable, "-m", "ferry", "flags", "eval", f"{ns}/new-checkout"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert human.returncode == 0 and "reason:   DEFAULT" in human.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "ferry", "flags", "eval", f"{ns}/nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert missing.returncode != 0 and "not found" in missing.stderr
    status, answered = ofrep("nope", {})
    assert status == 404 and answered["errorCode"] == "FLAG_NOT_FOUND", answered


# ------------------------------------------------------------------------------ drift, delete
def test_drift_is_restored_and_delete_removes_the_flag_everywhere(
    kube: Kube, operator: Operator
) -> None:
    ns = kube.namespace("ff-del")
    peer = kube.namespace("ff-peer", labels={"ferry.dev/accept": "true"})
    kube.apply(
        flag("going", ns, {**CHECKOUT, "target": {"namespaces": [ns, peer]}}),
        flag("staying", ns, {"variants": {"a": "A"}, "defaultVariant": "a"}),
    )
    wait_ready(kube, ns, "going")
    eventually(lambda: served_flags(kube, ns) == {"going", "staying"}, what="both flags in ns")
    original = served(kube, peer)
    assert original is not None

    kube.kubectl("delete", "configmap", "ferry-flags", "-n", peer)
    eventually(lambda: served(kube, peer) == original, what="deleted ferry-flags restored")
    kube.kubectl(
        "patch",
        "configmap",
        "ferry-flags",
        "-n",
        peer,
        "--type=merge",
        "-p",
        json.dumps({"data": {"flags.json": "{}"}}),
    )
    eventually(lambda: served(kube, peer) == original, what="edited ferry-flags restored")

    kube.kubectl("delete", "featureflag", "going", "-n", ns, "--timeout=30s")

    eventually(lambda: served_flags(kube, ns) == {"staying"}, what="going removed from ns")
    eventually(
        lambda: get_or_none(kube, "configmap", "ferry-flags", "-n", peer) is None,
        what="peer CM deleted",
    )
