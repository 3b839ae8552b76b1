"""ConfigEntry.spec.secretData on the real stack: values from a real Vault become Secrets beside the
ConfigMaps, rotate, are refused outside the namespace's Vault paths, and never leak.

The session operator reads the test Vault (token auth; entries in namespace N may name paths
under N/); without a Vault binary these tests are skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import urllib.request
from typing import Any

import psycopg
import pytest
import redis

from ferry.devenv.historyapi import HistoryApi
from ferry.devenv.vault import Vault
from tests.integration.conftest import Operator
from tests.integration.history_api_support import history_api_fixture  # noqa: F401
from tests.integration.test_entries import (
    audit_actions,
    configmap_data,
    deployment,
    template_hash,
    wait_ready,
)
from tests.support import Kube, condition, entry, eventually, get_or_none


@pytest.fixture
def vault_operator(operator: Operator, vault: Vault) -> Operator:
    if "FERRY_VAULT_ADDRESS" not in operator.env:
        pytest.skip("the session operator runs without Vault")
    return operator


def put_secret(vault: Vault, path: str, data: dict[str, str]) -> int:
    answer = vault.request("POST", f"secret/data/{path}", {"data": data})
    return int(answer["data"]["version"])


def secret_data(kube: Kube, ns: str, name: str) -> dict[str, str] | None:
    found = get_or_none(kube, "secret", name, "-n", ns)
    if found is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}


def cli_env(operator: Operator) -> dict[str, str]:
    """The ``ferry`` CLI's environment: a kubeconfig, and no database credentials (history is
    read through the history.ferry.dev API)."""
    return {k: v for k, v in operator.env.items() if k != "FERRY_DATABASE_URL"}


def with_secret(ns: str, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "data": {"db": {"host": "db.svc"}},
        "secretData": {"DB_PASSWORD": {"vault": {"path": path, "key": "password"}}},
        "target": {"format": "env"},
        **extra,
    }


def test_secret_is_materialised_rotated_on_demand_and_removed(
    kube: Kube, vault: Vault, vault_operator: Operator, database_url: str
) -> None:
    ns = kube.namespace("sec")
    put_secret(vault, f"{ns}/db", {"password": "first-value"})
    kube.apply(deployment("web", ns, "app"))
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
    kube.apply(entry("other", ns, with_secret(ns, f"{ns}/db")))  # same path, no refresh asked

    ready = wait_ready(kube, ns, "app")
    wait_ready(kube, ns, "other")
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "first-value"}
    assert configmap_data(kube, ns, "app") == {"DB_HOST": "db.svc"}
    resolved = condition(ready, "SecretsResolved")
    assert resolved is not None and resolved["status"] == "True"
    assert [(s["name"], s["path"], s["version"]) for s in ready["status"]["secrets"]] == [
        ("DB_PASSWORD", f"{ns}/db", 1)
    ]
    assert ready["status"]["secrets"][0]["hmac"].startswith("hmac-sha256:")
    first_hash = ready["status"]["hash"]
    eventually(lambda: template_hash(kube, ns, "web") == first_hash, what="workload rolled")

    configmap_before = get_or_none(kube, "configmap", "app", "-n", ns)
    assert configmap_before is not None

    # A new version in Vault, picked up on demand: a new revision, the Secret and the pods follow.
    assert put_secret(vault, f"{ns}/db", {"password": "second-value"}) == 2
    kube.kubectl("annotate", "configentry", "app", "-n", ns, "ferry.dev/refresh=1")
    eventually(
        lambda: secret_data(kube, ns, "app") == {"DB_PASSWORD": "second-value"},
        what="the rotated value in the Secret",
    )
    # The read that found version 2 re-renders every entry using the path, not only the one
    # asked to refresh.
    eventually(
        lambda: secret_data(kube, ns, "other") == {"DB_PASSWORD": "second-value"},
        what="the rotated value in the other entry's Secret",
    )
    rotated = eventually(
        lambda: (
            (o := get_or_none(kube, "ce", "app", "-n", ns))
            and o["status"].get("revision") == 2
            and o
        ),
        what="revision 2 after the rotation",
    )
    assert rotated["status"]["secrets"][0]["version"] == 2
    assert rotated["status"]["hash"] != first_hash
    eventually(lambda: template_hash(kube, ns, "web") == rotated["status"]["hash"])
    # Only the secret changed: the ConfigMap was not rewritten, and still names revision 1.
    configmap_after = get_or_none(kube, "configmap", "app", "-n", ns)
    assert configmap_after is not None
    assert (
        configmap_after["metadata"]["resourceVersion"]
        == configmap_before["metadata"]["resourceVersion"]
    )
    assert configmap_after["metadata"]["annotations"]["ferry.dev/revision"] == "1"

    with urllib.request.urlopen(f"{vault_operator.api_url}/metrics", timeout=10) as answer:
        reads = [
            float(line.split()[-1])
            for line in answer.read().decode().splitlines()
            if line.startswith("ferry_vault_reads_total ")
        ]
    assert reads and reads[0] >= 2  # the first read and the on-demand one

    # A hand edit of the Secret is drift, and is restored.
    kube.kubectl(
        "patch", "secret", "app", "-n", ns, "--type=merge",
        "-p", json.dumps({"stringData": {"DB_PASSWORD": "edited"}}),
    )  # fmt: skip
    eventually(
        lambda: secret_data(kube, ns, "app") == {"DB_PASSWORD": "second-value"},
        what="the hand-edited Secret restored",
    )
    eventually(lambda: "drift-corrected" in audit_actions(database_url, ns, "app"))

    # secretData dropped: the Secret goes, and status no longer names what was read for it.
    without = {k: v for k, v in with_secret(ns, f"{ns}/db").items() if k != "secretData"}
    kube.apply(entry("app", ns, without))
    eventually(lambda: get_or_none(kube, "secret", "app", "-n", ns) is None, what="Secret gone")

    def status_without_secrets() -> dict[str, Any] | None:
        status = (get_or_none(kube, "ce", "app", "-n", ns) or {}).get("status", {})
        return status if "secrets" not in status else None

    status = eventually(status_without_secrets, what="status.secrets gone with secretData")
    resolved = [c for c in status["conditions"] if c["type"] == "SecretsResolved"]
    assert [(c["status"], c["reason"]) for c in resolved] == [("True", "NoSecrets")]

    kube.kubectl("delete", "configentry", "app", "-n", ns, "--wait=true", timeout=60)
    assert get_or_none(kube, "secret", "app", "-n", ns) is None
    assert configmap_data(kube, ns, "app") is None


def test_paths_outside_the_namespace_are_refused_at_admission(
    kube: Kube, vault_operator: Operator
) -> None:
    ns = kube.namespace("sec-a")
    refused = kube.apply(entry("steal", ns, with_secret(ns, "team-b/db")), check=False)
    assert refused.returncode != 0
    assert "spec.secretData.DB_PASSWORD.vault.path" in refused.stderr
    assert f'may only name Vault paths under "{ns}"' in refused.stderr

    # The platform team widens what the namespace may name with an annotation.
    kube.kubectl("annotate", "namespace", ns, "ferry.dev/vault-paths=shared/certs")
    allowed = kube.apply(entry("ok", ns, with_secret(ns, "shared/certs/x")), check=False)
    assert "shared/certs/x" not in allowed.stderr, allowed.stderr


def test_a_vault_path_the_namespace_no_longer_allows_stops_being_read_at_once(
    kube: Kube, vault: Vault, vault_operator: Operator
) -> None:
    """The platform team takes back an annotation: the entry using it is refused within seconds
    (not at the next resync, minutes away), and the Secret it had made stays as it was."""
    ns = kube.namespace("sec-revoke")
    shared = f"shared-{ns}"
    kube.kubectl("annotate", "namespace", ns, f"ferry.dev/vault-paths={shared}")
    put_secret(vault, f"{shared}/db", {"password": "granted"})
    kube.apply(entry("app", ns, with_secret(ns, f"{shared}/db")))
    wait_ready(kube, ns, "app")

    kube.kubectl("annotate", "namespace", ns, "ferry.dev/vault-paths-")

    def refused() -> dict[str, Any] | None:
        found = condition(get_or_none(kube, "ce", "app", "-n", ns), "Valid")
        return found if found and found["status"] == "False" else None

    found = eventually(refused, timeout=15, what="Valid=False after the annotation went")
    assert "spec.secretData.DB_PASSWORD.vault.path" in found["message"]
    assert f'may only name Vault paths under "{ns}"' in found["message"]
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "granted"}


def test_unreadable_secret_is_reported_and_the_previous_secret_stays(
    kube: Kube, vault: Vault, vault_operator: Operator
) -> None:
    ns = kube.namespace("sec-miss")
    put_secret(vault, f"{ns}/db", {"password": "kept"})
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
    wait_ready(kube, ns, "app")

    spec = with_secret(ns, f"{ns}/db")
    spec["secretData"]["DB_PASSWORD"]["vault"]["key"] = "nope"
    kube.apply(entry("app", ns, spec))

    def failed() -> dict[str, Any] | None:
        obj = get_or_none(kube, "ce", "app", "-n", ns)
        found = condition(obj, "SecretsResolved")
        return found if found and found["status"] == "False" else None

    found = eventually(failed, what="SecretsResolved=False")
    assert found["reason"] == "SecretKeyNotFound"
    assert f'key "nope" not found in Vault secret "{ns}/db"' in found["message"]
    obj = get_or_none(kube, "ce", "app", "-n", ns)
    assert condition(obj, "Ready")["status"] == "False"
    assert condition(obj, "Stalled")["status"] == "True"
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "kept"}


def test_a_secret_ferry_did_not_create_is_never_overwritten(
    kube: Kube, vault: Vault, vault_operator: Operator
) -> None:
    ns = kube.namespace("sec-foreign")
    put_secret(vault, f"{ns}/db", {"password": "ferry"})
    kube.kubectl("create", "secret", "generic", "app", "-n", ns, "--from-literal=mine=1")
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))

    def conflict() -> dict[str, Any] | None:
        obj = get_or_none(kube, "ce", "app", "-n", ns)
        targets = ((obj or {}).get("status") or {}).get("targets") or []
        return obj if targets and targets[0].get("reason") == "Conflict" else None

    obj = eventually(conflict, what="a Conflict on the foreign Secret")
    assert 'Secret "app"' in obj["status"]["targets"][0]["message"]
    assert secret_data(kube, ns, "app") == {"mine": "1"}


def raw_secret_data(kube: Kube, ns: str, name: str) -> dict[str, bytes] | None:
    found = get_or_none(kube, "secret", name, "-n", ns)
    if found is None:
        return None
    return {k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()}


def test_secrets_of_bytes_labelled_as_ferrys_stop_nothing(
    kube: Kube, vault: Vault, vault_operator: Operator, tmp_path: Any
) -> None:
    """Anyone who may create Secrets may label one as Ferry's, holding bytes that are not text,
    and a target namespace's owner may edit Ferry's own Secret that way. Neither may stop the
    operator's Secret index — nor, at the next start, its readiness — for every tenant: the
    edited Secret is drift and restored, and a restart lists them all and becomes ready."""
    ns = kube.namespace("sec-bytes")
    put_secret(vault, f"{ns}/db", {"password": "kept"})
    blob = tmp_path / "blob"
    blob.write_bytes(b"\xff\xfe\x00 not text")
    kube.kubectl("create", "secret", "generic", "junk", "-n", ns, f"--from-file=k={blob}")
    kube.kubectl("label", "secret", "junk", "-n", ns, "app.kubernetes.io/managed-by=ferry")
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
    wait_ready(kube, ns, "app")

    edited = {"data": {"DB_PASSWORD": base64.b64encode(b"\xff\x00").decode()}}
    kube.kubectl("patch", "secret", "app", "-n", ns, "--type=merge", "-p", json.dumps(edited))
    eventually(
        lambda: raw_secret_data(kube, ns, "app") == {"DB_PASSWORD": b"kept"},
        what="the Secret edited to bytes restored",
    )

    vault_operator.stop()
    vault_operator.start()  # raises unless /readyz answers: every index listed
    put_secret(vault, f"{ns}/db", {"password": "after"})
    kube.kubectl("annotate", "configentry", "app", "-n", ns, "ferry.dev/refresh=after-restart")
    eventually(
        lambda: raw_secret_data(kube, ns, "app") == {"DB_PASSWORD": b"after"},
        what="the rotated value after the restart",
    )
    assert raw_secret_data(kube, ns, "junk") == {"k": b"\xff\xfe\x00 not text"}  # not Ferry's
    assert "not text" not in vault_operator.log.read_text()


def test_a_secret_value_appears_nowhere_but_in_the_secret(
    kube: Kube,
    vault: Vault,
    vault_operator: Operator,
    history_api: HistoryApi,
    database_url: str,
    redis_url: str,
) -> None:
    """The full cycle (create, rotate, roll back, delete) with random values, then every place
    Ferry writes is searched for them and their base64 form."""
    ns = kube.namespace("sec-leak")
    values = [secrets.token_hex(32) for _ in range(2)]
    put_secret(vault, f"{ns}/db", {"password": values[0]})
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db"), annotations={"a": "1"}))
    wait_ready(kube, ns, "app")
    put_secret(vault, f"{ns}/db", {"password": values[1]})
    kube.kubectl("annotate", "configentry", "app", "-n", ns, "ferry.dev/refresh=now")
    eventually(lambda: secret_data(kube, ns, "app") == {"DB_PASSWORD": values[1]})
    env = cli_env(vault_operator)

    def ferry(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [".venv/bin/ferry", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done

    diff = ferry("diff", f"{ns}/app", "1", "2")
    assert "DB_PASSWORD: secret value changed (version 1 → 2)" in diff.stdout
    history = ferry("history", f"{ns}/app")
    rollback = ferry("rollback", f"{ns}/app", "--to", "1", "--wait", "30")
    kube.kubectl("delete", "configentry", "app", "-n", ns, "--wait=true", timeout=60)

    needles = [v for value in values for v in (value, base64.b64encode(value.encode()).decode())]
    places: dict[str, str] = {
        "cli output": diff.stdout + history.stdout + rollback.stdout + rollback.stderr,
        "operator log": vault_operator.log.read_text(errors="replace"),
        "history-api log": history_api.log.read_text(errors="replace"),
        "events": kube.kubectl("get", "events", "-A", "-o", "json").stdout,
        "ferry objects": kube.kubectl("get", "ferry", "-A", "-o", "json").stdout,
        "configmaps": kube.kubectl("get", "configmaps", "-A", "-o", "json").stdout,
    }
    client = redis.Redis.from_url(redis_url)
    places["redis"] = "".join(
        repr(client.dump(key)) + repr(key) for key in client.scan_iter(count=1000)
    )
    with psycopg.connect(database_url) as conn:
        for table in ("revisions", "audit_log"):
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            places[f"postgres {table}"] = repr(rows)
    with urllib.request.urlopen(f"{vault_operator.api_url}/metrics", timeout=10) as answer:
        places["metrics"] = answer.read().decode()
    leaks = [(where, n[:8]) for where, text in places.items() for n in needles if n in text]
    assert leaks == []


def test_export_includes_secret_values_only_for_callers_who_may_read_secrets(
    kube: Kube, vault: Vault, vault_operator: Operator, history_api: HistoryApi
) -> None:
    ns = kube.namespace("sec-export")
    value = secrets.token_hex(16)
    put_secret(vault, f"{ns}/db", {"password": value})
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
    wait_ready(kube, ns, "app")
    reader = f"reader-{ns}"
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "ferry-reader", "namespace": ns},
            "rules": [
                {
                    "apiGroups": ["ferry.dev"],
                    "resources": ["configentries", "configschemas", "featureflags"],
                    "verbs": ["get", "list"],
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
            "metadata": {"name": "ferry-reader", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "ferry-reader",
            },
            "subjects": [{"kind": "User", "name": reader}],
        },
    )
    env = cli_env(vault_operator)

    def export(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [".venv/bin/ferry", "export", "-n", ns, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    plain = export("--as", reader)
    assert plain.returncode == 0, plain.stderr
    assert "secretData" in plain.stdout and value not in plain.stdout

    refused = export("--as", reader, "--include-secrets")
    assert refused.returncode != 0
    assert f'you may not get secrets in namespace "{ns}"' in refused.stderr
    assert value not in refused.stdout + refused.stderr

    admin = export("--include-secrets")
    assert admin.returncode == 0, admin.stderr
    assert f"DB_PASSWORD: {value}" in admin.stdout
