"""History, diff, rollback, export/restore, audit and validate through the `ferry` CLI, on the real
API server, PostgreSQL and operator (issue: history, rollback, audit and point-in-time recovery).

The CLI runs with a kubeconfig only (no FERRY_DATABASE_URL in its environment): it reads history
through Ferry's aggregated API (`ferry history-api`, registered as an APIService), issue 12.

Changes are made the way people make them: `kubectl apply --server-side --as=USER`, so the
mutating webhook stamps who changed what. Every assertion is on what the CLI prints and its exit
status, or on the ConfigMap a workload would read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from ferry.adapters.postgres import Store, migrate
from ferry.devenv.historyapi import HistoryApi
from ferry.domain.retention import Retention
from tests.integration.conftest import Operator
from tests.integration.history_api_support import history_api_fixture  # noqa: F401
from tests.support import PAYMENTS, Kube, eventually, get_or_none, manifest

pytestmark = pytest.mark.integration

#: The three changes every history test starts from: (user, reason, data).
CHANGES = (
    ("alice", "initial", {"db": {"poolSize": 10}}),
    ("bob", "more load", {"db": {"poolSize": 20}}),
    ("alice", "black friday", {"db": {"poolSize": 30}, "featureX": True}),
)


@dataclass(frozen=True)
class Cli:
    """`python -m ferry` with the caller's kubeconfig and nothing else: no database URL."""

    kube: Kube

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_DATABASE")}
        env["KUBECONFIG"] = str(self.kube.kubeconfig)
        return subprocess.run(
            [sys.executable, "-m", "ferry", *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self(*args, input=input)
        assert result.returncode == 0, f"ferry {' '.join(args)}: {result.stderr}{result.stdout}"
        return result.stdout


@pytest.fixture
def ferry(kube: Kube, history_api: HistoryApi) -> Cli:
    return Cli(kube)


def spec(data: dict[str, Any]) -> dict[str, Any]:
    return {"schemaRef": {"name": "payments"}, "data": data}


def apply_as(kube: Kube, user: str, obj: dict[str, Any], manager: str = "kubectl") -> None:
    kube.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={manager}",
        f"--as={user}",
        "-f",
        "-",
        input=yaml.safe_dump(obj),
    )


def entry(ns: str, name: str, data: dict[str, Any], reason: str) -> dict[str, Any]:
    return manifest(
        "ConfigEntry",
        name,
        ns,
        spec(data),
        annotations={"ferry.dev/change-reason": reason},
    )


def wait_revision(kube: Kube, ns: str, name: str, revision: int) -> None:
    def probe() -> bool:
        obj = get_or_none(kube, "configentry", name, "-n", ns) or {}
        return (obj.get("status") or {}).get("revision") == revision

    eventually(probe, timeout=30, what=f"ConfigEntry {ns}/{name} at revision {revision}")


def configmap_json(kube: Kube, ns: str, name: str) -> Any:
    cm = get_or_none(kube, "configmap", name, "-n", ns)
    return None if cm is None else json.loads(cm["data"]["config.json"])


def namespace_for_people(kube: Kube) -> str:
    """A namespace where alice and bob may edit Ferry objects and read their history (mallory
    has no access)."""
    ns = kube.namespace("hist")
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "ferry-editor", "namespace": ns},
            "rules": [
                {
                    "apiGroups": ["ferry.dev"],
                    "resources": ["configentries", "configschemas", "featureflags"],
                    "verbs": verbs,
                },
                {
                    "apiGroups": ["history.ferry.dev"],
                    "resources": ["configrevisions", "auditevents"],
                    "verbs": ["get", "list"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "ferry-editors", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "ferry-editor",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                for user in ("alice", "bob")
            ],
        },
    )
    return ns


def three_changes(kube: Kube, name: str = "payments") -> str:
    """A namespace with schema "payments" and entry ``name`` changed three times (CHANGES)."""
    ns = namespace_for_people(kube)
    apply_as(
        kube,
        "alice",
        manifest("ConfigSchema", "payments", ns, {"schema": PAYMENTS, "compatibility": "Backward"}),
    )
    for number, (user, reason, data) in enumerate(CHANGES, 1):
        apply_as(kube, user, entry(ns, name, data, reason))
        wait_revision(kube, ns, name, number)
    return ns


def history_json(ferry: Cli, ref: str) -> list[dict[str, Any]]:
    return list(json.loads(ferry.ok("history", ref, "-o", "json")))


# ------------------------------------------------------------------------------ history and diff


def test_history_shows_each_change_with_its_user_and_reason(
    kube: Kube, operator: Operator, ferry: Cli
) -> None:
    ns = three_changes(kube)

    table = ferry.ok("history", f"{ns}/payments")
    lines = table.splitlines()
    assert lines[0].split() == ["REVISION", "TIME", "USER", "REASON", "HASH"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    for line, (user, reason, _) in zip(lines[1:], CHANGES, strict=True):
        assert f"   {user}   " in line and reason in line and "sha256:" in line

    records = history_json(ferry, f"{ns}/payments")
    assert [(r["revision"], r["changedBy"], r["reason"]) for r in records] == [
        (1, "alice", "initial"),
        (2, "bob", "more load"),
        (3, "alice", "black friday"),
    ]
    assert [r["content"] for r in records] == [data for _, _, data in CHANGES]

    assert records[0]["kind"] == "ConfigEntry"  # the entry wins the default kind
    schemas = json.loads(
        ferry.ok("history", f"{ns}/payments", "--kind", "ConfigSchema", "-o", "json")
    )
    # (The mutating webhook stamps ConfigEntries and FeatureFlags only, so no user here.)
    assert [(r["kind"], r["revision"], r["content"]["schema"]) for r in schemas] == [
        ("ConfigSchema", 1, PAYMENTS)
    ]


def test_diff_between_revisions_and_against_the_live_object(
    kube: Kube, operator: Operator, ferry: Cli
) -> None:
    ns = three_changes(kube)
    ref = f"{ns}/payments"

    out = ferry.ok("diff", ref, "1", "2")
    assert out.splitlines() == [
        f"--- ConfigEntry {ref} revision 1",
        f"+++ ConfigEntry {ref} revision 2",
        "@@ -1,2 +1,2 @@",
        " db:",
        "-  poolSize: 10",
        "+  poolSize: 20",
    ]

    out = ferry.ok("diff", ref, "2")  # against the live object (= revision 3)
    assert f"+++ ConfigEntry {ref} live" in out
    assert "-  poolSize: 20" in out.splitlines()
    assert "+  poolSize: 30" in out.splitlines()
    assert "+featureX: true" in out.splitlines()

    same = ferry("diff", ref, "3")
    assert same.returncode == 0 and same.stdout == ""
    assert f"no differences between ConfigEntry {ref} revision 3 and ConfigEntry {ref} live" in (
        same.stderr
    )


def test_unknown_object_or_revision_exits_1_naming_it(
    kube: Kube, operator: Operator, ferry: Cli
) -> None:
    ns = three_changes(kube)

    missing = ferry("history", f"{ns}/nope")
    assert missing.returncode == 1
    assert f"ConfigEntry {ns}/nope not found" in missing.stderr

    for args in (("diff", f"{ns}/payments", "9"), ("rollback", f"{ns}/payments", "--to", "9")):
        result = ferry(*args)
        assert result.returncode == 1, args
        assert f"ConfigEntry {ns}/payments has no revision 9 (it has 1 to 3)" in result.stderr

    malformed = ferry("history", "payments")
    assert malformed.returncode == 1
    assert '"payments" is not NAMESPACE/NAME' in malformed.stderr


def test_a_user_rbac_does_not_let_get_the_object_is_refused(
    kube: Kube, operator: Operator, ferry: Cli
) -> None:
    ns = three_changes(kube)

    allowed = ferry("history", f"{ns}/payments", "--as=bob")
    assert allowed.returncode == 0, allowed.stderr

    for args in (
        ("history", f"{ns}/payments"),
        ("diff", f"{ns}/payments", "1", "2"),
        ("rollback", f"{ns}/payments", "--to", "1"),
    ):
        refused = ferry(*args, "--as=mallory")
        assert refused.returncode == 1, args
        assert refused.stdout == ""
        assert f"forbidden: you may not get ConfigEntry {ns}/payments" in refused.stderr

    export = ferry("export", "-n", ns, "--as=mallory")
    assert export.returncode == 1
    assert export.stdout == ""
    assert f'forbidden: you may not list configschemas in namespace "{ns}"' in export.stderr


# ------------------------------------------------------------------------------ rollback


def test_rollback_restores_the_configmap_and_records_a_new_revision(
    kube: Kube, operator: Operator, ferry: Cli
) -> None:
    ns = three_changes(kube)
    ref = f"{ns}/payments"

    out = ferry.ok("rollback", ref, "--to", "1", "--reason", "pool exhausted", "--as=bob")
    assert out.strip() == f"ConfigEntry {ref} rolled back to revision 1: recorded as revision 4"
    eventually(
        lambda: configmap_json(kube, ns, "payments") == {"db": {"poolSize": 10}},
        what="the ConfigMap back at revision 1's content",
    )
    wait_revision(kube, ns, "payments", 4)

    records = history_json(ferry, ref)
    assert [r["revision"] for r in records] == [1, 2, 3, 4]
    latest = records[-1]
    assert latest["reason"] == "rollback to 1: pool exhausted"
    assert latest["changedBy"] == "bob"
    assert latest["content"] == records[0]["content"]
    assert latest["hash"] == records[0]["hash"]

    again = ferry.ok("rollback", ref, "--to", "1")
    assert (
        again.strip()
        == f"ConfigEntry {ref} already has the spec of revision 1: nothing to roll back"
    )
    assert [r["revision"] for r in history_json(ferry, ref)] == [1, 2, 3, 4]

    # The rollback's audit row is written by the operator, not the CLI (which has no database
    # credentials): the new revision, with the user the API server vouched for at admission.
    trail = ferry.ok("audit", "-n", ns, "--user", "bob")
    rolled = [line for line in trail.splitlines() if "reason=rollback to 1" in line]
    assert len(rolled) == 1
    assert f"ConfigEntry {ref}" in rolled[0] and "   bob   " in rolled[0]
    assert "   4   " in rolled[0] and "reason=rollback to 1: pool exhausted" in rolled[0]
    records = json.loads(ferry.ok("audit", "-n", ns, "-o", "json"))
    assert [(r["user"], r["revision"]) for r in records if r["name"] == "payments"][-1] == (
        "bob",
        4,
    )


def test_rollback_of_an_object_argo_cd_manages_warns_and_shows_the_git_fix(
    kube: Kube, operator: Operator, ferry: Cli
) -> None:
    ns = kube.namespace("hist")
    kube.apply(manifest("ConfigSchema", "payments", ns, {"schema": PAYMENTS}))
    for number, data in enumerate(({"db": {"poolSize": 5}}, {"db": {"poolSize": 6}}), 1):
        obj = entry(ns, "synced", data, f"git commit {number}")
        obj["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] = (
            f"payments-app:ferry.dev/ConfigEntry:{ns}/synced"
        )
        kube.apply(obj, manager="argocd-controller")
        wait_revision(kube, ns, "synced", number)

    result = ferry("rollback", f"{ns}/synced", "--to", "1")
    assert result.returncode == 0, result.stderr
    assert "rolled back to revision 1: recorded as revision 3" in result.stdout
    assert (
        f"warning: ConfigEntry {ns}/synced is managed by Argo CD (payments-app), seen in field "
        'manager/marker "argocd-controller": its next sync will undo this rollback.'
    ) in result.stderr
    assert "commit the spec below to the manifest in Git" in result.stderr
    assert "argocd app set payments-app --sync-policy none" in result.stderr
    assert "poolSize: 5" in result.stderr.split("spec to commit:")[1]

    plain = three_changes(kube, "plain")
    quiet = ferry("rollback", f"{plain}/plain", "--to", "2")
    assert quiet.returncode == 0, quiet.stderr
    assert "warning" not in quiet.stderr


# ------------------------------------------------------------------------------ export / restore


def _midpoint(a: str, b: str) -> str:
    first = dt.datetime.fromisoformat(a.replace("Z", "+00:00"))
    second = dt.datetime.fromisoformat(b.replace("Z", "+00:00"))
    return (first + (second - first) / 2).isoformat().replace("+00:00", "Z")


def test_export_at_a_moment_between_changes_reproduces_that_state_exactly(
    kube: Kube, operator: Operator, ferry: Cli
) -> None:
    ns = namespace_for_people(kube)
    schema_spec = {"schema": PAYMENTS, "compatibility": "Backward"}
    apply_as(kube, "alice", manifest("ConfigSchema", "payments", ns, schema_spec))
    apply_as(kube, "alice", entry(ns, "gone", {"db": {"poolSize": 1}}, "short-lived"))
    wait_revision(kube, ns, "gone", 1)
    kube.kubectl("delete", "configentry", "gone", "-n", ns, "--as=alice")
    eventually(
        lambda: get_or_none(kube, "configentry", "gone", "-n", ns) is None,
        what="entry gone deleted",
    )
    for number, (user, reason, data) in enumerate(CHANGES, 1):
        apply_as(kube, user, entry(ns, "payments", data, reason))
        wait_revision(kube, ns, "payments", number)
    apply_as(kube, "bob", entry(ns, "later", {"db": {"poolSize": 2}}, "after the moment"))
    wait_revision(kube, ns, "later", 1)

    records = history_json(ferry, f"{ns}/payments")
    at = _midpoint(records[1]["createdAt"], records[2]["createdAt"])
    documents = list(yaml.safe_load_all(ferry.ok("export", "--at", at, "-n", ns)))

    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("ConfigSchema", "payments"),
        ("ConfigEntry", "payments"),
    ]
    assert documents[0]["spec"] == schema_spec
    assert documents[1]["spec"] == spec(CHANGES[1][2])
    assert documents[1]["metadata"]["namespace"] == ns
    assert documents[1]["metadata"]["annotations"]["ferry.dev/change-reason"].startswith(
        "restore of revision 2 (state at "
    )

    before_anything = ferry.ok("export", "--at", "2000-01-01T00:00:00Z", "-n", ns)
    assert before_anything == ""

    now = [d["metadata"]["name"] for d in yaml.safe_load_all(ferry.ok("export", "-n", ns))]
    assert now == ["payments", "later", "payments"]  # schema, then entries; "gone" is gone


def test_restore_into_an_emptied_namespace_recreates_it(
    kube: Kube, operator: Operator, ferry: Cli, tmp_path: Path
) -> None:
    ns = three_changes(kube)
    apply_as(
        kube,
        "bob",
        manifest(
            "ConfigEntry",
            "child",
            ns,
            {"inherits": [{"name": "payments"}], "data": {"db": {"poolSize": 7}}},
        ),
    )
    wait_revision(kube, ns, "child", 1)
    backup = tmp_path / "backup.yaml"
    ferry.ok("export", "-n", ns, "-f", str(backup))
    before = {
        name: (get_or_none(kube, "configentry", name, "-n", ns) or {}).get("spec")
        for name in ("payments", "child")
    }

    kube.kubectl("delete", "configentries", "--all", "-n", ns)
    kube.kubectl("delete", "configschemas", "--all", "-n", ns)
    eventually(
        lambda: (
            configmap_json(kube, ns, "payments") is None
            and configmap_json(kube, ns, "child") is None
        ),
        what="the namespace emptied",
    )

    out = ferry.ok("restore", str(backup))
    assert out.splitlines() == [
        f"ConfigSchema {ns}/payments restored",
        f"ConfigEntry {ns}/payments restored",
        f"ConfigEntry {ns}/child restored",
        "3 object(s) restored",
    ]
    for name in ("payments", "child"):
        assert (get_or_none(kube, "configentry", name, "-n", ns) or {}).get("spec") == before[name]
    eventually(
        lambda: (
            configmap_json(kube, ns, "payments") == CHANGES[2][2]
            and configmap_json(kube, ns, "child") == {"db": {"poolSize": 7}, "featureX": True}
        ),
        what="the ConfigMaps recreated",
    )
    records = history_json(ferry, f"{ns}/payments")
    assert records[-1]["revision"] == 4
    assert records[-1]["content"] == CHANGES[2][2]
    assert records[-1]["reason"].startswith("restore of revision 3 (state at ")

    trail = ferry.ok("audit", "-n", ns, "-o", "json")
    actions = [(r["action"], r["kind"], r["name"]) for r in json.loads(trail)]
    assert ("deleted", "ConfigEntry", "payments") in actions
    assert ("deleted", "ConfigSchema", "payments") in actions
    assert actions.count(("created", "ConfigEntry", "payments")) == 2


# ------------------------------------------------------------------------------ validate


def test_validate_offline_prints_the_webhooks_message_and_exits_1(
    kube: Kube, operator: Operator, ferry: Cli, tmp_path: Path
) -> None:
    ns = kube.namespace("hist")
    kube.apply(manifest("ConfigSchema", "payments", ns, {"schema": PAYMENTS}))
    bad = entry(ns, "bad", {"db": {"poolSize": 500}}, "typo")
    good = entry(ns, "good", {"db": {"poolSize": 50}}, "fine")
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(
        yaml.safe_dump(manifest("ConfigSchema", "payments", ns, {"schema": PAYMENTS}))
    )
    manifests = tmp_path / "entries.yaml"
    manifests.write_text(yaml.safe_dump_all([good, bad]))

    result = ferry("validate", "-f", str(manifests), "--schema", str(schema_file))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"ConfigEntry {ns}/good is valid"
    denied = kube.apply(bad, check=False)
    assert denied.returncode != 0
    assert lines[1] in denied.stderr  # the very message kubectl shows
    assert lines[1].startswith(f"ConfigEntry {ns}/bad is invalid: spec.data.db.poolSize:")

    good_only = tmp_path / "good.yaml"
    good_only.write_text(yaml.safe_dump(good))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(PAYMENTS))
    unref = manifest("ConfigEntry", "plain", ns, {"data": {"db": {"poolSize": 0}}})
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(unref))
    assert ferry("validate", "-f", str(good_only), "--schema", str(schema_file)).returncode == 0
    plain = ferry("validate", "-f", str(tmp_path / "plain.yaml"), "--schema", str(bare))
    assert plain.returncode == 1
    assert "spec.data.db.poolSize" in plain.stdout

    missing = ferry("validate", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert f"file {tmp_path / 'nope.yaml'} not found" in missing.stderr


# ------------------------------------------------------------------------------ retention


async def test_retention_keeps_the_latest_and_every_revision_export_needs(
    database_url: str, ferry: Cli
) -> None:
    """Pruning as the operator runs it, on revisions dated in the past (no cluster objects are
    needed: history is read from PostgreSQL, and the admin may `get` any name)."""
    ns = f"ret-{uuid.uuid4().hex[:8]}"
    migrate(database_url)  # as the operator does at start; a no-op when it already ran
    store = Store(database_url)
    await store.open()
    try:
        for number in range(1, 6):
            await store.record(
                kind="ConfigEntry",
                namespace=ns,
                name="a",
                uid="uid-a",
                content={"n": number},
                spec={"data": {"n": number}},
                content_hash=f"sha256:{number}",
                changed_by="alice",
                reason=None,
            )
        await store.record(
            kind="ConfigEntry",
            namespace=ns,
            name="b",
            uid="uid-b",
            content={},
            spec={"data": {}},
            content_hash="sha256:b",
            changed_by="bob",
            reason=None,
        )
        await store.audit("deleted", kind="ConfigEntry", namespace=ns, name="b", uid="uid-b")
        with psycopg.connect(database_url, autocommit=True) as conn:
            # a: revisions 10, 8, 6, 4 and 2 days old; b: made 20 and deleted 15 days ago.
            conn.execute(
                "UPDATE revisions SET created_at = now() - make_interval(days => 12 - 2 * revision)"
                " WHERE namespace=%s AND name='a'",
                (ns,),
            )
            conn.execute(
                "UPDATE revisions SET created_at = now() - interval '20 days' WHERE namespace=%s"
                " AND name='b'",
                (ns,),
            )
            conn.execute(
                "UPDATE audit_log SET at = now() - interval '15 days' WHERE namespace=%s", (ns,)
            )

        def numbers() -> list[int]:
            return [r["revision"] for r in history_json(ferry, f"{ns}/a")]

        four_days_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=4, hours=12)).isoformat()
        exported = ferry.ok("export", "-n", ns, "--at", four_days_ago)

        pruned = await store.prune(Retention(revisions=2, days=5))
        # kept: the last two (4, 5), and 3, which was current 5 days ago; b went with its deletion
        assert numbers() == [3, 4, 5]
        assert pruned.revisions == 3
        assert ferry.ok("export", "-n", ns, "--at", four_days_ago) == exported
        assert ferry("history", f"{ns}/b").returncode == 1

        await store.prune(Retention(revisions=1))
        assert numbers() == [5]
        await store.prune(Retention(revisions=1, days=1))
        assert numbers() == [5]  # the latest revision is never pruned

        assert "deleted" in ferry.ok("audit", "-n", ns)
        pruned = await store.prune(Retention(audit_days=10))
        assert pruned.audit_rows >= 1
        assert "deleted" not in ferry.ok("audit", "-n", ns)
    finally:
        await store.close()


# ------------------------------------------------------------------------------ restore onto live
# objects, and what it reports (security review: restore left foreign fields in place)


def _spec_of(kube: Kube, ns: str, name: str, kind: str = "configentry") -> Any:
    return (get_or_none(kube, kind, name, "-n", ns) or {}).get("spec")


def test_restore_gives_an_existing_object_exactly_the_exported_spec(
    kube: Kube, operator: Operator, ferry: Cli, tmp_path: Path
) -> None:
    """Fields added after the moment by another hand (a merge patch) are gone after the restore:
    the spec is the exported one, not a merge of both. Labels the export does not name stay."""
    ns = namespace_for_people(kube)
    initial = manifest("ConfigEntry", "plain", ns, {"data": {"a": 1}})
    apply_as(kube, "alice", initial)
    wait_revision(kube, ns, "plain", 1)
    apply_as(kube, "alice", manifest("ConfigSchema", "s", ns, {"schema": {"type": "object"}}))
    foreign = {"spec": {"data": {"b": 2}, "schemaRef": {"name": "s"}}}
    kube.kubectl(
        "patch", "configentry", "plain", "-n", ns, "--as=bob", "--type=merge",
        "-p", json.dumps(foreign),
    )  # fmt: skip
    wait_revision(kube, ns, "plain", 2)
    kube.kubectl("label", "configentry", "plain", "-n", ns, "team=payments", "--as=bob")
    records = history_json(ferry, f"{ns}/plain")
    backup = tmp_path / "at.yaml"
    at = _midpoint(records[0]["createdAt"], records[1]["createdAt"])
    ferry.ok("export", "--at", at, "-n", ns, "-f", str(backup))
    exported = list(yaml.safe_load_all(backup.read_text()))
    assert [(d["kind"], d["metadata"]["name"]) for d in exported] == [("ConfigEntry", "plain")]
    assert exported[0]["spec"] == {"data": {"a": 1}}

    out = ferry.ok("restore", str(backup), "--as=alice")
    assert out.splitlines() == [f"ConfigEntry {ns}/plain restored", "1 object(s) restored"]
    live = get_or_none(kube, "configentry", "plain", "-n", ns)
    assert live["spec"] == exported[0]["spec"]  # "b" and schemaRef are gone
    assert live["metadata"]["labels"]["team"] == "payments"
    reason = exported[0]["metadata"]["annotations"]["ferry.dev/change-reason"]
    assert live["metadata"]["annotations"]["ferry.dev/change-reason"] == reason
    eventually(
        lambda: configmap_json(kube, ns, "plain") == {"a": 1},
        what="the ConfigMap back at the exported content",
    )
    wait_revision(kube, ns, "plain", 3)
    latest = history_json(ferry, f"{ns}/plain")[-1]
    assert (latest["changedBy"], latest["reason"]) == ("alice", reason)

    again = ferry.ok("restore", str(backup))
    assert again.splitlines() == [
        f"ConfigEntry {ns}/plain unchanged: it already has the exported spec",
        "0 object(s) restored, 1 unchanged",
    ]


def test_restore_reports_every_object_and_stops_at_the_first_refusal(
    kube: Kube, operator: Operator, ferry: Cli, tmp_path: Path
) -> None:
    ns = namespace_for_people(kube)
    apply_as(kube, "alice", manifest("ConfigSchema", "payments", ns, {"schema": PAYMENTS}))
    for name, size in (("a", 1), ("b", 2), ("c", 3)):
        apply_as(kube, "alice", entry(ns, name, {"db": {"poolSize": size}}, "first"))
        wait_revision(kube, ns, name, 1)
    backup = tmp_path / "backup.yaml"
    ferry.ok("export", "-n", ns, "-f", str(backup))
    for name in "abc":
        apply_as(kube, "bob", entry(ns, name, {"db": {"poolSize": 50}}, "second"))
    documents = list(yaml.safe_load_all(backup.read_text()))
    assert [d["metadata"]["name"] for d in documents] == ["payments", "a", "b", "c"]
    documents[2]["spec"]["data"]["db"]["poolSize"] = 500  # an edited backup the webhook refuses
    backup.write_text(yaml.safe_dump_all(documents))

    result = ferry("restore", str(backup), "--as=alice")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"ConfigSchema {ns}/payments unchanged: it already has the exported spec"
    assert lines[1] == f"ConfigEntry {ns}/a restored"
    assert lines[2].startswith(f"ConfigEntry {ns}/b refused: ")
    assert "spec.data.db.poolSize: 500 is greater than the maximum of 100" in lines[2]
    assert lines[3:] == [
        f"ConfigEntry {ns}/c not attempted",
        "1 object(s) restored, 1 unchanged, 1 refused, 1 not attempted",
    ]
    assert result.stderr.startswith(f"error: restore stopped at ConfigEntry {ns}/b: ")
    pools = {n: _spec_of(kube, ns, n)["data"]["db"]["poolSize"] for n in "abc"}
    assert pools == {"a": 1, "b": 50, "c": 50}


def test_restore_retries_when_only_metadata_moved_and_reports_a_concurrent_spec_change(
    kube: Kube, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real concurrent edit, made through the API server right after the restore read the
    object (the only way to hit that window every time): a label change is re-read and the
    restore goes on; a spec change is reported as a conflict and kept, never overwritten."""
    from ferry.adapters.kube_caller import Cluster, Identity
    from ferry.history import service as history_service

    ns = kube.namespace("hist")
    kube.apply(manifest("ConfigEntry", "raced", ns, {"data": {"a": 1}}))
    exported = manifest("ConfigEntry", "raced", ns, {"data": {"a": 0}})
    session = history_service.Session(Identity(kubeconfig=str(kube.kubeconfig)))
    pending: list[tuple[str, ...]] = []
    real_get = Cluster.get

    def get_then_edit(self: Cluster, kind: str, namespace: str, name: str) -> Any:
        live = real_get(self, kind, namespace, name)
        if pending:
            kube.kubectl(*pending.pop(0), "-n", namespace)
        return live

    monkeypatch.setattr(Cluster, "get", get_then_edit)

    pending.append(("label", "configentry", "raced", "late=label"))
    outcomes = history_service.restore(session, [exported])
    assert not pending, "the concurrent edit was made"
    assert [(o.name, o.outcome) for o in outcomes] == [("raced", "updated")]
    live = get_or_none(kube, "configentry", "raced", "-n", ns)
    assert live["spec"] == {"data": {"a": 0}}
    assert live["metadata"]["labels"]["late"] == "label"

    pending.append(
        ("patch", "configentry", "raced", "--type=merge", "-p", '{"spec":{"data":{"a":2}}}')
    )
    exported["spec"] = {"data": {"a": 3}}
    with pytest.raises(history_service.RestoreFailed) as failed:
        history_service.restore(session, [exported])
    assert not pending
    assert [(o.name, o.outcome) for o in failed.value.outcomes] == [("raced", "conflict")]
    assert f"ConfigEntry {ns}/raced" in str(failed.value)
    assert "changed by someone else" in str(failed.value)
    assert _spec_of(kube, ns, "raced") == {"data": {"a": 2}}  # theirs, not overwritten


def test_export_file_is_readable_by_its_owner_only(
    kube: Kube, operator: Operator, ferry: Cli, tmp_path: Path
) -> None:
    """Exports can carry Secret values (--include-secrets) and always name Vault paths."""
    ns = namespace_for_people(kube)
    apply_as(kube, "alice", manifest("ConfigEntry", "e", ns, {"data": {"a": 1}}))
    wait_revision(kube, ns, "e", 1)

    fresh = tmp_path / "fresh.yaml"
    ferry.ok("export", "-n", ns, "-f", str(fresh))
    assert fresh.stat().st_mode & 0o777 == 0o600
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(fresh.read_text())] == ["e"]

    old = tmp_path / "old.yaml"
    old.write_text("stale\n" * 1000)
    old.chmod(0o644)
    result = ferry("export", "-n", ns, "-f", str(old))
    assert result.returncode == 0, result.stderr
    assert old.stat().st_mode & 0o777 == 0o600
    assert old.read_text() == fresh.read_text()
    assert f"warning: {old} was mode 0644" in result.stderr
