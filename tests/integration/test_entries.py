"""ConfigEntry reconciliation on the real API server, PostgreSQL and Redis (issue: reconciliation).

Every test applies resources the way a user does and checks what a user would: the ConfigMap in
the target namespace, the entry's status and Events, the revision rows, the Redis cache.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
import redis
import yaml

from tests.integration.conftest import Operator
from tests.integration.test_serve import Serve, serve  # noqa: F401 (a fixture)
from tests.support import PAYMENTS, Kube, condition, entry, eventually, get_or_none, schema

pytestmark = pytest.mark.integration


def configmap_data(kube: Kube, ns: str, name: str) -> dict[str, str] | None:
    cm = get_or_none(kube, "configmap", name, "-n", ns)
    return None if cm is None else cm.get("data", {})


def wait_ready(kube: Kube, ns: str, name: str, generation: int | None = None) -> dict:
    def probe() -> dict | None:
        obj = get_or_none(kube, "configentry", name, "-n", ns)
        ready = condition(obj, "Ready")
        if ready is None or ready["status"] != "True":
            return None
        if generation is not None and ready.get("observedGeneration") != generation:
            return None
        return obj

    return eventually(probe, timeout=30, what=f"ConfigEntry {ns}/{name} Ready")


def revisions(database_url: str, ns: str, name: str) -> list[tuple[int, str, str | None]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT revision, hash, reason FROM revisions WHERE kind='ConfigEntry' "
            "AND namespace=%s AND name=%s ORDER BY revision",
            (ns, name),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def events(kube: Kube, ns: str, name: str) -> list[dict]:
    listed = kube.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    return list(listed["items"])


def event_reasons(kube: Kube, ns: str, name: str) -> set[str]:
    return {e["reason"] for e in events(kube, ns, name)}


# ------------------------------------------------------------------------------ resolve + record


def test_inherited_entry_is_merged_validated_recorded_and_materialised(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    ns = kube.namespace("resolve")
    kube.apply(
        schema("payments", ns, PAYMENTS),
        entry("defaults", ns, {"data": {"db": {"poolSize": 10, "host": "db"}, "log": "info"}}),
        entry(
            "payments-api",
            ns,
            {
                "schemaRef": {"name": "payments"},
                "inherits": [{"name": "defaults"}],
                "data": {"db": {"poolSize": 40}, "featureX": True},
            },
            annotations={"ferry.dev/change-reason": "raise pool for Black Friday"},
        ),
    )

    obj = wait_ready(kube, ns, "payments-api")

    expected = {"db": {"poolSize": 40, "host": "db"}, "log": "info", "featureX": True}
    data = configmap_data(kube, ns, "payments-api")
    assert data is not None
    assert json.loads(data["config.json"]) == expected
    cm = kube.get_json("configmap", "payments-api", "-n", ns)
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ferry"
    assert cm["metadata"]["annotations"]["ferry.dev/entry-name"] == "payments-api"
    assert cm["metadata"]["annotations"]["ferry.dev/revision"] == "1"
    assert cm["metadata"]["annotations"]["ferry.dev/hash"] == obj["status"]["hash"]
    assert obj["status"]["revision"] == 1
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert "refusedTargets" not in obj["status"]  # none refused (decision 0034)
    for type_ in ("Valid", "Recorded", "Synced", "Ready"):
        c = condition(obj, type_)
        assert c is not None and c["status"] == "True", c
        assert c["observedGeneration"] == obj["metadata"]["generation"]
        assert c["reason"] and c["lastTransitionTime"]
    assert revisions(database_url, ns, "payments-api") == [
        (1, obj["status"]["hash"], "raise pool for Black Friday")
    ]
    eventually(  # Events are sent after the reconcile's writes
        lambda: "RevisionRecorded" in event_reasons(kube, ns, "payments-api"),
        what="a RevisionRecorded Event",
    )


def test_changing_a_base_or_schema_re_resolves_every_entry_using_it(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    ns = kube.namespace("deps")
    kube.apply(
        schema("s", ns, PAYMENTS, compatibility="None"),
        entry("base", ns, {"data": {"db": {"poolSize": 5}}}),
        entry("a", ns, {"inherits": [{"name": "base"}], "schemaRef": {"name": "s"}, "data": {}}),
        entry("b", ns, {"inherits": [{"name": "base"}], "data": {"b": 1}}),
    )
    wait_ready(kube, ns, "a")
    wait_ready(kube, ns, "b")

    kube.apply(entry("base", ns, {"data": {"db": {"poolSize": 7}}}))

    for name in ("a", "b"):
        eventually(
            lambda name=name: (
                (configmap_data(kube, ns, name) or {}).get("config.json", "").find('"poolSize": 7')
                >= 0
            ),
            what=f"{name} re-resolved after its base changed",
        )
    assert [r[0] for r in revisions(database_url, ns, "a")] == [1, 2]

    # A schema change (compatibility None) that the entry no longer satisfies: Valid=False,
    # no new revision, and the ConfigMap keeps the last good content.
    strict = json.loads(json.dumps(PAYMENTS))
    strict["properties"]["db"]["properties"]["poolSize"]["maximum"] = 6
    kube.apply(schema("s", ns, strict, compatibility="None"))

    def invalid() -> dict | None:
        c = condition(get_or_none(kube, "configentry", "a", "-n", ns), "Valid")
        return c if c and c["status"] == "False" else None

    valid = eventually(invalid, what="entry a Valid=False after the schema tightened")
    assert valid["reason"] == "SchemaViolation"
    assert valid["message"] == "spec.data.db.poolSize: 7 is greater than the maximum of 6"
    assert '"poolSize": 7' in (configmap_data(kube, ns, "a") or {})["config.json"]
    assert [r[0] for r in revisions(database_url, ns, "a")] == [1, 2]
    eventually(  # Events are sent after the reconcile's writes
        lambda: "InvalidConfig" in event_reasons(kube, ns, "a"), what="a InvalidConfig Event"
    )


def test_reapplying_the_same_content_records_no_new_revision(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    ns = kube.namespace("idem")
    kube.apply(entry("e", ns, {"data": {"x": 1}}))
    wait_ready(kube, ns, "e")
    # A spec change that does not change the resolved content (reordered keys, new label).
    kube.apply(entry("e", ns, {"data": {"x": 1}}, labels={"team": "a"}))
    kube.apply(entry("e", ns, {"data": {"x": 2}}))
    wait_ready(kube, ns, "e", generation=2)

    assert [r[0] for r in revisions(database_url, ns, "e")] == [1, 2]


# ------------------------------------------------------------------------------ formats


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", {"config.json": None}),
        ("yaml", {"config.yaml": None}),
        ("env", {"DB_POOLSIZE": "40", "DB_HOSTS_0": "a", "NAME": "pay", "ON": "true"}),
        ("properties", {"application.properties": None}),
        ("files", {"db": None, "name": "pay", "on": "true"}),
    ],
)
def test_each_format_renders_the_keys_a_pod_reads(
    kube: Kube, operator: Operator, fmt: str, expected: dict[str, str | None]
) -> None:
    ns = kube.namespace(f"fmt-{fmt}")
    data = {"db": {"poolSize": 40, "hosts": ["a"]}, "name": "pay", "on": True}
    kube.apply(entry("e", ns, {"data": data, "target": {"format": fmt, "name": "app-config"}}))
    wait_ready(kube, ns, "e")

    rendered = configmap_data(kube, ns, "app-config")

    assert rendered is not None
    assert set(rendered) == set(expected)
    for key, value in expected.items():
        if value is not None:
            assert rendered[key] == value
    if fmt == "json":
        assert json.loads(rendered["config.json"]) == data
    if fmt == "yaml":
        assert yaml.safe_load(rendered["config.yaml"]) == data
    if fmt == "properties":
        lines = rendered["application.properties"].splitlines()
        assert "db.poolSize=40" in lines and "db.hosts[0]=a" in lines
    if fmt == "files":
        assert json.loads(rendered["db"]) == data["db"]


def test_rendered_object_over_one_mebibyte_is_invalid_with_its_size(
    kube: Kube, operator: Operator
) -> None:
    ns = kube.namespace("big")
    kube.apply(entry("e", ns, {"data": {"x": "small"}}))
    wait_ready(kube, ns, "e")
    # ~600 KB stored compactly in the custom resource (within etcd's limit) renders to ~1.35 MB
    # of indented JSON, over the ConfigMap limit.
    big = {"k": ["y"] * 150_000}
    result = kube.apply(entry("e", ns, {"data": big}), check=False)
    if result.returncode != 0:  # refused at admission (the webhook runs the same check)
        assert "TooLarge" in result.stderr or "bytes" in result.stderr, result.stderr
        return

    def too_large() -> dict | None:
        c = condition(get_or_none(kube, "configentry", "e", "-n", ns), "Valid")
        return c if c and c["status"] == "False" else None

    c = eventually(too_large, what="Valid=False TooLarge")
    assert c["reason"] == "TooLarge"
    assert "bytes" in c["message"] and "1048576" in c["message"]
    assert configmap_data(kube, ns, "e") == {"config.json": '{\n  "x": "small"\n}'}


# ------------------------------------------------------------------------------ cache


def test_rendered_config_is_cached_in_redis_and_served_by_the_read_api(
    kube: Kube, operator: Operator, redis_url: str, request: pytest.FixtureRequest
) -> None:
    read_api: Serve = request.getfixturevalue("serve")  # test_serve's `ferry serve`
    ns = kube.namespace("cache")
    kube.apply(entry("e", ns, {"data": {"a": {"b": 1}}, "target": {"format": "env"}}))
    obj = wait_ready(kube, ns, "e")

    cached = json.loads(redis.Redis.from_url(redis_url).get(f"ferry:config:{ns}:e"))
    # The read API is `ferry serve` (authenticated); the operator's own port serves no tenant data.
    token = read_api.account(ns, "reader", ["configentries"])
    status, _, served = read_api.request("GET", f"/v1/configs/{ns}/e", token=token)
    assert status == 200, served

    assert cached["revision"] == obj["status"]["revision"] == served["revision"]
    assert cached["hash"] == obj["status"]["hash"] == served["hash"]
    assert cached["rendered"] == {"A_B": "1"} == served["rendered"]


def test_redis_down_never_blocks_materialisation_and_the_cache_catches_up(
    kube: Kube, operator: Operator, redis_server: Any, redis_url: str
) -> None:
    ns = kube.namespace("nocache")
    redis_server.pause()
    try:
        kube.apply(entry("e", ns, {"data": {"v": 1}}))

        def materialised_uncached() -> dict | None:
            obj = get_or_none(kube, "configentry", "e", "-n", ns)
            cached = condition(obj, "Cached")
            data = configmap_data(kube, ns, "e")
            ok = data is not None and cached is not None and cached["status"] == "False"
            return cached if ok else None

        cached = eventually(materialised_uncached, what="ConfigMap written, Cached=False")
        assert cached["reason"] == "CacheUnavailable"
        assert "ferry_cache_up 0.0" in metrics(operator)
        assert (
            condition(get_or_none(kube, "configentry", "e", "-n", ns), "Ready")["status"] == "True"
        )
    finally:
        redis_server.resume()

    def caught_up() -> bool:
        raw = redis.Redis.from_url(redis_url).get(f"ferry:config:{ns}:e")
        return raw is not None and json.loads(raw)["revision"] == 1

    eventually(caught_up, timeout=60, what="cache written after Redis came back")
    assert "ferry_cache_up 1.0" in metrics(operator)


def metrics(operator: Operator) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{operator.api_url}/metrics", timeout=5) as response:
        return str(response.read().decode())


# ------------------------------------------------------------------------------ targets


def test_targets_need_opt_in_and_follow_namespaces_created_or_relabelled_later(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    src = kube.namespace("src")
    team = f"team-{src[-8:]}"
    accepting = kube.namespace("acc", labels={"team": team, "ferry.dev/accept": "true"})
    refusing = kube.namespace("ref", labels={"team": team})
    kube.apply(
        entry(
            "shared",
            src,
            {"data": {"k": "v"}, "target": {"namespaceSelector": {"matchLabels": {"team": team}}}},
        )
    )

    def targets() -> dict[str, Any] | None:
        status = (get_or_none(kube, "configentry", "shared", "-n", src) or {}).get("status", {})
        found = {t["namespace"]: t for t in status.get("targets", [])}
        refused = status.get("refusedTargets") or {}
        return status if accepting in found and refused.get("count") == 1 else None

    status = eventually(targets, what="status lists the accepted target, counts the refused one")
    assert [t["namespace"] for t in status["targets"]] == [accepting]
    assert status["targets"][0]["synced"] is True
    assert status["refusedTargets"] == {
        "count": 1,
        "first": [refusing],
        "digest": status["refusedTargets"]["digest"],
    }
    assert configmap_data(kube, accepting, "shared") == {"config.json": '{\n  "k": "v"\n}'}
    assert configmap_data(kube, refusing, "shared") is None
    eventually(  # Events are sent after the reconcile's writes
        lambda: "TargetRefused" in event_reasons(kube, src, "shared"), what="a TargetRefused Event"
    )
    eventually(
        lambda: "target-refused" in audit_actions(database_url, src, "shared"),
        what="the refusal in the audit trail",
    )

    # Opting in by annotation naming the source namespace.
    kube.kubectl("annotate", "namespace", refusing, f"ferry.dev/accept-from=other,{src}")
    eventually(lambda: configmap_data(kube, refusing, "shared"), what="opted-in namespace gets it")
    eventually(  # nothing refused any more: no summary of zeros either (decision 0034)
        lambda: "refusedTargets" not in kube.get_json("configentry", "shared", "-n", src)["status"],
        what="refusedTargets gone from status once every target accepts",
    )

    # A namespace created later with the label gets it; relabelled away, it loses it.
    late = kube.namespace("late", labels={"team": team, "ferry.dev/accept": "true"})
    eventually(lambda: configmap_data(kube, late, "shared"), what="new namespace gets the config")
    kube.kubectl("label", "namespace", late, "team-", "--overwrite")
    eventually(lambda: configmap_data(kube, late, "shared") is None, what="relabelled loses it")


def test_explicit_target_list_and_dropped_target_removed(kube: Kube, operator: Operator) -> None:
    src = kube.namespace("src")
    a = kube.namespace("a", labels={"ferry.dev/accept": "true"})
    b = kube.namespace("b", labels={"ferry.dev/accept": "true"})
    kube.apply(entry("e", src, {"data": {"x": 1}, "target": {"namespaces": [a, b]}}))
    eventually(lambda: configmap_data(kube, a, "e") and configmap_data(kube, b, "e"))

    kube.apply(entry("e", src, {"data": {"x": 1}, "target": {"namespaces": [a]}}))

    eventually(lambda: configmap_data(kube, b, "e") is None, what="dropped target removed")
    assert configmap_data(kube, a, "e") is not None


# ------------------------------------------------------------------------------ lifecycle


def audit_actions(database_url: str, ns: str, name: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT action FROM audit_log WHERE namespace=%s AND name=%s ORDER BY id", (ns, name)
        ).fetchall()
    return [r[0] for r in rows]


def test_hand_edits_and_deletes_are_restored_with_an_event(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    ns = kube.namespace("drift")
    kube.apply(entry("e", ns, {"data": {"x": 1}}))
    wait_ready(kube, ns, "e")
    good = configmap_data(kube, ns, "e")

    kube.kubectl(
        "patch",
        "configmap",
        "e",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"data": {"config.json": "{\\"x\\": 666}"}}',
    )
    eventually(lambda: configmap_data(kube, ns, "e") == good, what="hand edit reverted")
    # Events are sent after the reconcile's writes (reporting.hold_reports): wait for them.
    eventually(lambda: "DriftCorrected" in event_reasons(kube, ns, "e"), what="DriftCorrected")

    kube.kubectl("delete", "configmap", "e", "-n", ns)
    eventually(lambda: configmap_data(kube, ns, "e") == good, what="deleted ConfigMap restored")

    def messages() -> set[str]:
        return {e["message"] for e in events(kube, ns, "e") if e["reason"] == "DriftCorrected"}

    expected = {
        f"restored ConfigMap {ns}/e edited by hand",
        f"restored ConfigMap {ns}/e deleted by hand",
    }
    eventually(lambda: messages() == expected, what="both DriftCorrected Events")
    eventually(
        lambda: audit_actions(database_url, ns, "e").count("drift-corrected") == 2,
        what="both corrections in the audit trail",
    )


def test_schema_status_counts_the_entries_that_use_it(kube: Kube, operator: Operator) -> None:
    ns = kube.namespace("usedby")
    uses = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 5}}}
    kube.apply(schema("payments", ns, PAYMENTS), entry("a", ns, uses), entry("b", ns, uses))

    def used_by(count: int) -> bool:
        status = (get_or_none(kube, "configschema", "payments", "-n", ns) or {}).get("status", {})
        return status.get("usedBy") == count

    eventually(lambda: used_by(2), what="usedBy 2")
    kube.kubectl("delete", "configentry", "a", "-n", ns)
    eventually(lambda: used_by(1), what="usedBy 1 after a delete")
    kube.apply(entry("b", ns, {"data": {"db": {"poolSize": 5}}}))  # b stops naming the schema
    eventually(lambda: used_by(0), what="usedBy 0 after b dropped its schemaRef")


def test_foreign_configmap_is_never_overwritten_and_taken_over_once_gone(
    kube: Kube, operator: Operator
) -> None:
    ns = kube.namespace("conflict")
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app", "namespace": ns},
            "data": {"mine": "yes"},
        }
    )
    kube.apply(entry("e", ns, {"data": {"x": 1}, "target": {"name": "app"}}))

    def conflicted() -> dict | None:
        c = condition(get_or_none(kube, "configentry", "e", "-n", ns), "Synced")
        return c if c and c["status"] == "False" else None

    synced = eventually(conflicted, what="Synced=False with a conflict")
    assert synced["reason"] == "Conflict"
    assert condition(get_or_none(kube, "configentry", "e", "-n", ns), "Ready")["status"] == "False"
    assert configmap_data(kube, ns, "app") == {"mine": "yes"}

    # Its owner deletes it: the entry writes there without waiting for a resync.
    kube.kubectl("delete", "configmap", "app", "-n", ns)
    eventually(
        lambda: (
            json.loads((configmap_data(kube, ns, "app") or {}).get("config.json", "{}")) == {"x": 1}
        ),
        what="the entry's ConfigMap in place of the deleted one",
        timeout=20,
    )
    wait_ready(kube, ns, "e")


def test_delete_removes_every_materialised_object(kube: Kube, operator: Operator) -> None:
    src = kube.namespace("src")
    other = kube.namespace("o", labels={"ferry.dev/accept": "true"})
    kube.apply(entry("e", src, {"data": {"x": 1}, "target": {"namespaces": [src, other]}}))
    eventually(lambda: configmap_data(kube, src, "e") and configmap_data(kube, other, "e"))
    assert "ferry.dev/cleanup" in kube.get_json("ce", "e", "-n", src)["metadata"]["finalizers"]

    kube.kubectl("delete", "configentry", "e", "-n", src, "--wait=true", timeout=60)

    assert configmap_data(kube, src, "e") is None
    assert configmap_data(kube, other, "e") is None


# ------------------------------------------------------------------------------ hot reload


def deployment(name: str, ns: str, reload_on: str | None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if reload_on:
        meta["annotations"] = {"ferry.dev/reload-on": reload_on}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            },
        },
    }


def template_hash(kube: Kube, ns: str, name: str) -> str | None:
    d = kube.get_json("deployment", name, "-n", ns)
    return (d["spec"]["template"]["metadata"].get("annotations") or {}).get("ferry.dev/config-hash")


def test_annotated_workloads_roll_when_content_changes_and_only_then(
    kube: Kube, operator: Operator
) -> None:
    ns = kube.namespace("reload")
    kube.apply(deployment("web", ns, "app"), deployment("other", ns, None))
    kube.apply(entry("app", ns, {"data": {"v": 1}}))
    first = wait_ready(kube, ns, "app")["status"]["hash"]
    eventually(lambda: template_hash(kube, ns, "web") == first, what="deployment annotated")
    generation = kube.get_json("deployment", "web", "-n", ns)["metadata"]["generation"]

    kube.apply(entry("app", ns, {"data": {"v": 1}}, labels={"unrelated": "change"}))
    kube.apply(entry("app", ns, {"data": {"v": 2}}))
    second = wait_ready(kube, ns, "app", generation=2)["status"]["hash"]
    eventually(lambda: template_hash(kube, ns, "web") == second, what="rolled on new content")

    assert kube.get_json("deployment", "web", "-n", ns)["metadata"]["generation"] == generation + 1
    assert template_hash(kube, ns, "other") is None

    # A workload annotated later gets the current hash without touching the entry.
    kube.apply(deployment("late", ns, "app"))
    eventually(lambda: template_hash(kube, ns, "late") == second, what="late workload annotated")


# ------------------------------------------------------------------------------ failures


def test_postgres_down_means_recorded_false_and_nothing_changes_until_it_returns(
    kube: Kube, operator: Operator, postgres: Any, database_url: str
) -> None:
    ns = kube.namespace("nodb")
    kube.apply(entry("e", ns, {"data": {"v": 1}}))
    wait_ready(kube, ns, "e")
    before = configmap_data(kube, ns, "e")

    postgres.pause()
    try:
        kube.apply(entry("e", ns, {"data": {"v": 2}}))

        def not_recorded() -> dict | None:
            c = condition(get_or_none(kube, "configentry", "e", "-n", ns), "Recorded")
            return c if c and c["status"] == "False" else None

        recorded = eventually(not_recorded, what="Recorded=False while PostgreSQL is down")
        assert recorded["reason"] == "DatabaseUnavailable"
        assert configmap_data(kube, ns, "e") == before
    finally:
        postgres.resume()

    wait_ready(kube, ns, "e", generation=2)
    assert json.loads(configmap_data(kube, ns, "e")["config.json"]) == {"v": 2}
    assert [r[0] for r in revisions(database_url, ns, "e")] == [1, 2]


def deletions(database_url: str, ns: str, kind: str, name: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action='deleted' AND kind=%s AND namespace=%s"
            " AND name=%s",
            (kind, ns, name),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_deletion_waits_for_its_row_in_history_while_postgres_is_down(
    kube: Kube, operator: Operator, postgres: Any, database_url: str
) -> None:
    """History must know an object is gone, or `ferry export --at` counts it live and `ferry
    restore` brings it back: an entry deleted while PostgreSQL is down keeps Ferry's finalizer
    (status saying why) until its deletion is recorded; a schema's deletion (no finalizer) is
    retried until recorded."""
    ns = kube.namespace("nodb-delete")
    kube.apply(schema("s", ns, {"type": "object"}))
    kube.apply(entry("e", ns, {"data": {"v": 1}}))
    wait_ready(kube, ns, "e")

    postgres.pause()
    try:
        kube.kubectl("delete", "configentry", "e", "-n", ns, "--wait=false")
        kube.kubectl("delete", "configschema", "s", "-n", ns, "--wait=false")

        def waiting() -> dict | None:
            c = condition(get_or_none(kube, "configentry", "e", "-n", ns), "Ready")
            return c if c and c["reason"] == "DeletionNotRecorded" else None

        ready = eventually(waiting, what="the entry held while its deletion is not recorded")
        assert ready["status"] == "False"
        obj = get_or_none(kube, "configentry", "e", "-n", ns)
        assert obj is not None and "ferry.dev/cleanup" in obj["metadata"]["finalizers"]
        assert condition(obj, "Reconciling")["reason"] == "DatabaseUnavailable"
    finally:
        postgres.resume()

    eventually(
        lambda: get_or_none(kube, "configentry", "e", "-n", ns) is None,
        timeout=60,
        what="the entry gone once PostgreSQL is back",
    )
    assert deletions(database_url, ns, "ConfigEntry", "e") == 1
    eventually(
        lambda: deletions(database_url, ns, "ConfigSchema", "s") == 1,
        timeout=60,
        what="the schema's deletion recorded once PostgreSQL is back",
    )


def test_fifty_quick_updates_end_with_the_last_content_and_increasing_revisions(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    ns = kube.namespace("burst")
    for i in range(50):
        kube.apply(entry("e", ns, {"data": {"i": i}}))

    eventually(
        lambda: (configmap_data(kube, ns, "e") or {}).get("config.json") == '{\n  "i": 49\n}',
        timeout=60,
        what="last content materialised",
    )
    wait_ready(kube, ns, "e", generation=50)
    numbers = [r[0] for r in revisions(database_url, ns, "e")]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len({r[1] for r in revisions(database_url, ns, "e")}) == len(numbers)
    with psycopg.connect(database_url) as conn:
        latest = conn.execute(
            "SELECT content FROM revisions WHERE kind='ConfigEntry' AND namespace=%s "
            "AND name='e' ORDER BY revision DESC LIMIT 1",
            (ns,),
        ).fetchone()
    assert latest is not None and latest[0] == {"i": 49}


def test_reload_on_names_the_source_namespace_for_entries_from_elsewhere(
    kube: Kube, operator: Operator
) -> None:
    """A bare name means an entry of the workload's own namespace: an accepted source cannot roll
    a workload that did not name it (tenant isolation, issue 11)."""
    src = kube.namespace("rsrc")
    target = kube.namespace("rtgt", labels={"ferry.dev/accept": "true"})
    kube.apply(
        deployment("bare", target, "shared"),
        deployment("qualified", target, f"{src}/shared"),
    )
    kube.apply(entry("shared", src, {"data": {"v": 1}, "target": {"namespaces": [target]}}))
    content = wait_ready(kube, src, "shared")["status"]["hash"]
    eventually(
        lambda: template_hash(kube, target, "qualified") == content,
        what="the workload naming <namespace>/<entry> rolled",
    )
    assert configmap_data(kube, target, "shared") is not None
    assert template_hash(kube, target, "bare") is None


def test_metrics_expose_what_an_operator_of_ferry_watches(kube: Kube, operator: Operator) -> None:
    """The figures the chart's dashboard and alerts read, after a scenario that moves each."""
    ns = kube.namespace("metrics")
    kube.apply(entry("e", ns, {"data": {"v": 1}}))
    wait_ready(kube, ns, "e")
    exposed = metrics(operator)
    for name in (
        'ferry_reconciles_total{kind="ConfigEntry",result="ok"}',
        'ferry_reconcile_duration_seconds_count{kind="ConfigEntry"}',
        "ferry_revisions_recorded_total",
        "ferry_queue_depth",
        'ferry_materialised_objects{kind="ConfigMap"}',
        "ferry_store_record_duration_seconds_count",
        "ferry_store_up 1.0",
        "ferry_cache_up 1.0",
        'ferry_queue_wait_seconds_count{kind="FeatureFlag"}',  # every kind, from the start
    ):
        assert name in exposed, name

    def value(series: str) -> float:
        line = next(line for line in exposed.splitlines() if line.startswith(series + " "))
        return float(line.split()[-1])

    assert value('ferry_materialised_objects{kind="ConfigMap"}') >= 1
    # The entry's key was queued and taken at least once; how long it waited is recorded.
    assert value('ferry_queue_wait_seconds_count{kind="ConfigEntry"}') >= 1
