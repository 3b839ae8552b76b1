"""The foundation: real API server with Ferry's CRDs, real PostgreSQL and Redis, `ferry dev`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml

from ferry.devenv.process import pid_alive, port_is_open
from tests.support import Kube, entry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_config_entry_round_trips_intact(kube: Kube) -> None:
    ns = kube.namespace("roundtrip")
    data = {
        "db": {"poolSize": 40, "hosts": ["a", "b"], "timeouts": {"connect": 1.5, "read": None}},
        "greeting": "Grüße, 世界 🚀",
        "nothing": None,
        "big": 9007199254740993,  # 2**53 + 1: lost if anything on the way goes through a float
        "negative": -9223372036854775808,
        "flags": [True, False, None, {"deep": [[1], [2, [3]]]}],
        "empty": {},
    }
    kube.apply(entry("payments", ns, {"data": data, "target": {"format": "yaml"}}))

    stored = kube.get_json("configentry", "payments", "-n", ns)

    assert stored["spec"]["data"] == data
    assert stored["spec"]["target"]["format"] == "yaml"


def test_missing_required_field_is_refused_naming_it(kube: Kube) -> None:
    ns = kube.namespace("strict")
    result = kube.apply(entry("bad", ns, {"schemaRef": {}, "data": {}}), check=False)

    assert result.returncode != 0
    assert "spec.schemaRef.name: Required value" in result.stderr
    assert kube.kubectl("get", "configentry", "bad", "-n", ns, check=False).returncode != 0


def test_wrong_type_is_refused_naming_the_field(kube: Kube) -> None:
    ns = kube.namespace("strict")
    bad = entry("bad", ns, {"data": {}, "target": {"namespaces": "prod", "format": "xml"}})

    created = kube.create(bad, check=False)
    applied = kube.apply(bad, check=False)

    assert created.returncode != 0
    assert "spec.target.namespaces: Invalid value" in created.stderr
    assert 'spec.target.format: Unsupported value: "xml"' in created.stderr
    assert applied.returncode != 0
    assert ".spec.target.namespaces: expected list" in applied.stderr
    assert kube.kubectl("get", "configentry", "bad", "-n", ns, check=False).returncode != 0


def test_feature_flag_without_variants_is_refused(kube: Kube) -> None:
    ns = kube.namespace("strict")
    flag = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "FeatureFlag",
        "metadata": {"name": "f", "namespace": ns},
        "spec": {"defaultVariant": "on"},
    }
    result = kube.apply(flag, check=False)

    assert result.returncode != 0
    assert "spec.variants: Required value" in result.stderr


def test_kubectl_get_ferry_lists_all_three_kinds_with_columns(kube: Kube) -> None:
    ns = kube.namespace("category")
    kube.apply(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ConfigSchema",
            "metadata": {"name": "payments", "namespace": ns},
            "spec": {"schema": {"type": "object"}},
        },
        entry("payments-api", ns, {"schemaRef": {"name": "payments"}, "data": {"a": 1}}),
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "FeatureFlag",
            "metadata": {"name": "new-checkout", "namespace": ns},
            "spec": {"variants": {"on": True, "off": False}, "defaultVariant": "off"},
        },
    )

    out = kube.kubectl("get", "ferry", "-n", ns).stdout

    assert "configschema.ferry.dev/payments" in out
    assert "configentry.ferry.dev/payments-api" in out
    assert "featureflag.ferry.dev/new-checkout" in out
    headers = [line.split() for line in out.splitlines() if line.startswith("NAME")]
    assert ["NAME", "COMPATIBILITY", "USED-BY", "READY", "AGE"] in headers
    assert ["NAME", "SCHEMA", "REVISION", "READY", "AGE"] in headers
    assert ["NAME", "STATE", "DEFAULT", "REVISION", "READY", "AGE"] in headers
    # Defaults from the CRD schema show in the columns.
    assert any(
        line.split()[:2] == ["configschema.ferry.dev/payments", "Backward"]
        for line in out.splitlines()
    )
    assert kube.kubectl("get", "ce,ff,cfs", "-n", ns).returncode == 0


def _twin_crd(group: str, keyed_lists: bool) -> dict[str, Any]:
    """ConfigEntry's CRD under another group (no operator watches it); ``keyed_lists`` puts back
    the status lists as they were before decision 0034 (keyed by type and by name)."""
    crd = yaml.safe_load((REPO / "crds" / "configentries.yaml").read_text())
    crd["metadata"] = {"name": f"configentries.{group}"}
    crd["spec"]["group"] = group
    # Neither Ferry's short name nor its category: while the twin exists (and while it is being
    # deleted), `kubectl get ce` would be ambiguous and `kubectl get ferry` in another test
    # would list the twin's resources, then fail to map them once they are gone.
    del crd["spec"]["names"]["shortNames"], crd["spec"]["names"]["categories"]
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    for field, key in (("conditions", "type"), ("secrets", "name")):
        assert status["properties"][field]["x-kubernetes-list-type"] == "atomic"
        if keyed_lists:
            status["properties"][field]["x-kubernetes-list-type"] = "map"
            status["properties"][field]["x-kubernetes-list-map-keys"] = [key]
    return crd


def test_upgrading_the_crds_keeps_every_status_written_before(kube: Kube) -> None:
    """Status lists became atomic (decision 0034). A cluster upgraded from keyed lists keeps the
    status its objects carry, the next status write succeeds, and the old per-field ownership
    records collapse into one."""
    group = f"up{uuid.uuid4().hex[:8]}.test.ferry.dev"
    ns = kube.namespace("crd-upgrade")
    resource = f"configentries.{group}"

    def establish(keyed_lists: bool) -> None:
        kube.apply(_twin_crd(group, keyed_lists), manager="ferry-install")
        kube.kubectl("wait", "--for=condition=Established", f"crd/{resource}", "--timeout=30s")

    def write_status(ready: str) -> dict[str, Any]:
        condition = {"type": "Ready", "status": ready, "reason": "Synced", "message": "m"}
        condition |= {"observedGeneration": 1, "lastTransitionTime": "2026-11-29T00:00:00Z"}
        patch = {"status": {"conditions": [condition], "secrets": [{"name": "password"}]}}
        args = ("-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
        kube.kubectl("patch", resource, "e", *args)
        obj = kube.get_json(resource, "e", "-n", ns, "--show-managed-fields")
        return obj  # type: ignore[no-any-return]

    def status_fields(obj: dict[str, Any]) -> dict[str, Any]:
        (owned,) = [m for m in obj["metadata"]["managedFields"] if m.get("subresource") == "status"]
        return owned["fieldsV1"]["f:status"]  # type: ignore[no-any-return]

    try:
        establish(keyed_lists=True)
        kube.create(
            {
                "apiVersion": f"{group}/v1alpha1",
                "kind": "ConfigEntry",
                "metadata": {"name": "e", "namespace": ns},
                "spec": {"data": {"a": 1}},
            }
        )
        before = write_status("False")
        assert 'k:{"type":"Ready"}' in status_fields(before)["f:conditions"]

        establish(keyed_lists=False)
        kept = kube.get_json(resource, "e", "-n", ns)
        assert kept["status"] == before["status"]
        after = write_status("True")
        assert after["status"]["conditions"][0]["status"] == "True"
        assert after["status"]["secrets"] == [{"name": "password"}]
        assert status_fields(after)["f:conditions"] == {}
        assert status_fields(after)["f:secrets"] == {}
    finally:
        kube.kubectl("delete", "crd", resource, "--ignore-not-found", "--wait=false", check=False)


def test_psycopg_reaches_postgres(database_url: str) -> None:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("select current_database(), version()").fetchone()
    assert row is not None
    assert row[0] == "ferry"
    assert row[1].startswith("PostgreSQL")


def test_redis_py_reaches_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    client.set("ferry:test", "ok")
    assert client.get("ferry:test") == b"ok"
    client.close()


def _ferry(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
        check=False,
    )


def test_dev_up_twice_then_down_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {**os.environ, "FERRY_DEV_DIR": str(tmp_path / "dev")}
    first = _ferry("dev", "up", env=env)
    assert first.returncode == 0, first.stderr
    state = json.loads((tmp_path / "dev" / "state.json").read_text())
    pids = [p["pid"] for p in state["processes"]]
    assert len(pids) >= 4  # etcd, kube-apiserver, postgres, redis (+ operator, webhooks)
    exported = _ferry("dev", "env", env=env)
    assert exported.returncode == 0
    assert exported.stdout.startswith("export KUBECONFIG=")
    assert "FERRY_DATABASE_URL=postgresql://" in exported.stdout
    assert "FERRY_REDIS_URL=redis://127.0.0.1:" in exported.stdout
    # kubectl's discovery cache (a directory per API server port) goes with the stack.
    cache = tmp_path / "dev" / "k8s" / "kubectl-cache"
    assert f"KUBECACHEDIR={cache}" in exported.stdout
    assert (cache / "discovery").is_dir()  # made by `dev up`'s own kubectl calls
    kubeconfig = yaml.safe_load(Path(state["kubeconfig"]).read_text())
    urls = [
        state["database_url"],
        state["redis_url"],
        state["extra"]["FERRY_API_URL"],
        state["extra"]["FERRY_WEBHOOKS_API_URL"],  # `ferry webhooks`, beside the operator
        kubeconfig["clusters"][0]["cluster"]["server"],
    ]
    ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in urls]
    assert all(port_is_open(port) for port in ports)

    second = _ferry("dev", "up", env=env)
    assert second.returncode == 0, second.stderr
    assert "already up" in second.stderr
    again = json.loads((tmp_path / "dev" / "state.json").read_text())
    assert [p["pid"] for p in again["processes"]] == pids

    down = _ferry("dev", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert [port for port in ports if port_is_open(port)] == []
    assert not (tmp_path / "dev").exists()
