"""Revisions and audit as a Kubernetes API (issue 12, part 2): `kubectl get configrevisions`
through the API server's aggregation layer, on the real API server, PostgreSQL and operator.

People are users impersonated with kubectl's `--as` (the API server authenticates the admin,
then acts as the user): the API server forwards who they are to `ferry history-api` in its
front-proxy headers, and the history API asks RBAC (SubjectAccessReview) about that user.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.devenv.controlplane import FRONT_PROXY_CA
from ferry.devenv.historyapi import HistoryApi
from ferry.tls import CertificateAuthority
from tests.integration.conftest import Operator
from tests.integration.history_api_support import history_api_fixture  # noqa: F401
from tests.support import PAYMENTS, Kube, eventually, get_or_none, manifest

pytestmark = pytest.mark.integration

HISTORY_RULE = {
    "apiGroups": ["history.ferry.dev"],
    "resources": ["configrevisions", "auditevents"],
    "verbs": ["get", "list"],
}
EDIT_RULE = {
    "apiGroups": ["ferry.dev"],
    "resources": ["configentries", "configschemas", "featureflags"],
    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def grant(kube: Kube, ns: str, user: str, *rules: dict[str, Any]) -> None:
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"{user}-role", "namespace": ns},
            "rules": list(rules),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-binding", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{user}-role",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def apply_as(kube: Kube, user: str, obj: dict[str, Any]) -> None:
    kube.kubectl("apply", "--server-side", f"--as={user}", "-f", "-", input=yaml.safe_dump(obj))


def wait_revision(kube: Kube, ns: str, kind: str, name: str, revision: int) -> None:
    def probe() -> bool:
        obj = get_or_none(kube, kind, name, "-n", ns) or {}
        return (obj.get("status") or {}).get("revision") == revision

    eventually(probe, timeout=30, what=f"{kind} {ns}/{name} at revision {revision}")


def entry(ns: str, name: str, pool: int, reason: str) -> dict[str, Any]:
    return manifest(
        "ConfigEntry",
        name,
        ns,
        {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": pool}}},
        annotations={"ferry.dev/change-reason": reason},
    )


@pytest.fixture(scope="module")
def payments(kube: Kube, ferry_operator: Operator, history_api: HistoryApi) -> tuple[str, str]:
    """Namespace "payments" (alice may edit and read history there) with entries api (two
    revisions, by alice) and worker (one); namespace "other" where alice has no rights, with an
    entry of its own."""
    ferry_operator.ensure_running()
    ns, other = kube.namespace("payments"), kube.namespace("other")
    grant(kube, ns, "alice", EDIT_RULE, HISTORY_RULE)
    grant(kube, other, "bob", EDIT_RULE, HISTORY_RULE)
    for namespace, user in ((ns, "alice"), (other, "bob")):
        apply_as(kube, user, manifest("ConfigSchema", "payments", namespace, {"schema": PAYMENTS}))
    apply_as(kube, "alice", entry(ns, "api", 10, "first"))
    wait_revision(kube, ns, "configentry", "api", 1)
    apply_as(kube, "alice", entry(ns, "api", 20, "more load"))
    apply_as(kube, "alice", entry(ns, "worker", 5, "worker pool"))
    apply_as(kube, "bob", entry(other, "secret-plan", 7, "other tenant"))
    wait_revision(kube, ns, "configentry", "api", 2)
    wait_revision(kube, ns, "configentry", "worker", 1)
    wait_revision(kube, other, "configentry", "secret-plan", 1)
    return ns, other


def kubectl_as(kube: Kube, user: str, *args: str) -> Any:
    return kube.kubectl(*args, f"--as={user}", check=False)


def test_kubectl_get_lists_one_namespace_as_a_table_and_refuses_the_others(
    kube: Kube, payments: tuple[str, str]
) -> None:
    ns, other = payments

    listed = kubectl_as(kube, "alice", "get", "configrevisions", "-n", ns)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ENTRY", "REVISION", "USER", "REASON", "AGE"]
    rows = [line.split() for line in lines[1:]]
    assert [row[:4] for row in rows] == [
        ["configentry.api.1", "ConfigEntry", "api", "1"],
        ["configentry.api.2", "ConfigEntry", "api", "2"],
        ["configentry.worker.1", "ConfigEntry", "worker", "1"],
        ["configschema.payments.1", "ConfigSchema", "payments", "1"],
    ]
    # (The mutating webhook stamps entries and flags only: the schema has no user.)
    assert [row[4] for row in rows[:3]] == ["alice", "alice", "alice"]
    assert "more load" in lines[2]

    refused = kubectl_as(kube, "alice", "get", "configrevisions", "-n", other)
    assert refused.returncode != 0
    assert "Error from server (Forbidden)" in refused.stderr
    assert 'User "alice" cannot list resource "configrevisions"' in refused.stderr
    assert f'in the namespace "{other}"' in refused.stderr
    assert "secret-plan" not in refused.stdout + refused.stderr

    everywhere = kubectl_as(kube, "alice", "get", "configrevisions", "-A")
    assert everywhere.returncode != 0
    assert "Forbidden" in everywhere.stderr and "at the cluster scope" in everywhere.stderr

    one = kubectl_as(kube, "alice", "get", "configrevision", "configentry.api.2", "-n", other)
    assert one.returncode != 0 and "Forbidden" in one.stderr

    audit = kubectl_as(kube, "alice", "get", "auditevents", "-n", ns, "-o", "json")
    assert audit.returncode == 0, audit.stderr
    events = json.loads(audit.stdout)["items"]
    assert {(e["spec"]["action"], e["spec"]["entry"], e["spec"]["user"]) for e in events} >= {
        ("created", "api", "alice"),
        ("updated", "api", "alice"),
        ("created", "worker", "alice"),
    }
    assert all(e["metadata"]["namespace"] == ns for e in events)
    assert kubectl_as(kube, "alice", "get", "auditevents", "-n", other).returncode != 0

    admin = kube.kubectl("get", "configrevisions", "-A").stdout.splitlines()
    assert admin[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [other, "configentry.secret-plan.1"] for line in admin)


def test_yaml_shows_the_content_and_selectors_pick_an_entry(
    kube: Kube, payments: tuple[str, str]
) -> None:
    ns, _ = payments

    shown = kubectl_as(
        kube, "alice", "get", "configrevision", "configentry.api.1", "-n", ns, "-o", "yaml"
    )
    assert shown.returncode == 0, shown.stderr
    obj = yaml.safe_load(shown.stdout)
    assert obj["apiVersion"] == "history.ferry.dev/v1alpha1" and obj["kind"] == "ConfigRevision"
    assert obj["spec"]["content"] == {"db": {"poolSize": 10}}
    assert obj["spec"]["recordedSpec"]["data"] == {"db": {"poolSize": 10}}
    assert (obj["spec"]["changedBy"], obj["spec"]["reason"]) == ("alice", "first")
    assert obj["spec"]["hash"].startswith("sha256:")

    def names(*args: str) -> list[str]:
        out = kubectl_as(kube, "alice", "get", "configrevisions", "-n", ns, *args, "-o", "name")
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    prefix = "configrevision.history.ferry.dev/"
    assert names("--field-selector", "spec.entry=api") == [
        f"{prefix}configentry.api.1",
        f"{prefix}configentry.api.2",
    ]
    assert names("--field-selector", "spec.kind=ConfigSchema") == [
        f"{prefix}configschema.payments.1"
    ]
    assert names("--field-selector", "spec.entry=api,spec.revision=2") == [
        f"{prefix}configentry.api.2"
    ]
    assert names("-l", "ferry.dev/entry-name=worker") == [f"{prefix}configentry.worker.1"]
    assert names("--field-selector", "spec.entry=nope") == []
    # kubectl pages with limit/continue (500 a page by default): one a page gives the same list.
    everything = names()
    assert len(everything) == 4
    assert names("--chunk-size=1") == everything
    assert names("--chunk-size=3", "--field-selector", "spec.kind=ConfigEntry") == everything[:3]

    bad = kubectl_as(
        kube, "alice", "get", "configrevisions", "-n", ns, "--field-selector", "spec.colour=red"
    )
    assert bad.returncode != 0
    assert 'field label not supported: "spec.colour"' in bad.stderr

    missing = kubectl_as(kube, "alice", "get", "configrevision", "configentry.api.9", "-n", ns)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_discovery_lists_both_resources(kube: Kube, history_api: HistoryApi) -> None:
    out = kube.kubectl("api-resources", "--api-group=history.ferry.dev", "-o", "wide").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"configrevisions", "auditevents"}
    assert "true" in rows["configrevisions"].split()  # namespaced
    assert "ConfigRevision" in rows["configrevisions"] and "get,list" in rows["configrevisions"]


# ------------------------------------------------------------------------------ who is trusted


def _call(port: int, context: ssl.SSLContext, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/apis/history.ferry.dev/v1alpha1/configrevisions",
        headers={"Accept": TABLE, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _context(client_cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the attacker does not care who the server is
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    return context


def test_a_forged_x_remote_user_without_the_front_proxy_certificate_is_refused(
    kube: Kube, history_api: HistoryApi, tmp_path: Path
) -> None:
    pki = kube.kubeconfig.parent / "pki"
    if not (pki / FRONT_PROXY_CA).exists():
        pytest.skip("needs the control plane the tests start (its front-proxy CA)")
    forged = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}

    code, body = _call(history_api.port, _context(None), forged)
    assert code == 401
    assert body["kind"] == "Status" and "no client certificate" in body["message"]

    # A certificate the cluster trusts for users (the admin's) is not the front proxy's.
    admin = (pki / "admin.crt", pki / "admin.key")
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _call(history_api.port, _context(admin), forged)

    # Nor is one from another CA that calls itself front-proxy-client.
    impostor = CertificateAuthority.create("impostor").issue("front-proxy-client", client=True)
    impostor.write(tmp_path / "i.crt", tmp_path / "i.key")
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _call(history_api.port, _context((tmp_path / "i.crt", tmp_path / "i.key")), forged)

    # The real front proxy's certificate, with the same headers: trusted, and RBAC decides.
    proxy = (pki / "front-proxy-client.crt", pki / "front-proxy-client.key")
    code, body = _call(history_api.port, _context(proxy), {"X-Remote-User": "mallory"})
    assert code == 403, body
    code, body = _call(history_api.port, _context(proxy), forged)
    assert code == 200 and body["kind"] == "Table"


# ------------------------------------------------------------------------------ the CLI


def token_kubeconfig(kube: Kube, ns: str, account: str, path: Path) -> Path:
    """A kubeconfig holding only a service account's bearer token (no client certificate)."""
    kube.kubectl("create", "serviceaccount", account, "-n", ns)
    token = kube.kubectl("create", "token", account, "-n", ns, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {
                "name": account,
                "context": {"cluster": admin["clusters"][0]["name"], "user": account},
            }
        ],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def ferry_cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_DATABASE")}
    env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_cli_reads_history_with_a_token_kubeconfig_and_no_database_credentials(
    kube: Kube, payments: tuple[str, str], tmp_path: Path
) -> None:
    ns, other = payments
    grant(kube, ns, f"system:serviceaccount:{ns}:ci", EDIT_RULE, HISTORY_RULE)
    kubeconfig = token_kubeconfig(kube, ns, "ci", tmp_path / "ci.kubeconfig")

    history = ferry_cli(kubeconfig, "history", f"{ns}/api", "-o", "json")
    assert history.returncode == 0, history.stderr
    records = json.loads(history.stdout)
    assert [(r["revision"], r["changedBy"], r["reason"]) for r in records] == [
        (1, "alice", "first"),
        (2, "alice", "more load"),
    ]
    diff = ferry_cli(kubeconfig, "diff", f"{ns}/api", "1", "2")
    assert diff.returncode == 0, diff.stderr
    assert "-  poolSize: 10" in diff.stdout.splitlines()
    exported = ferry_cli(kubeconfig, "export", "-n", ns)
    assert exported.returncode == 0, exported.stderr
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(exported.stdout)] == [
        "payments",
        "api",
        "worker",
    ]
    audit = ferry_cli(kubeconfig, "audit", "-n", ns, "-o", "json")
    assert audit.returncode == 0, audit.stderr
    # Every row names the user the API server vouched for (stamped at admission), none a name
    # the CLI chose: the CLI has no way to write one.
    users = {(r["name"], r["user"]) for r in json.loads(audit.stdout) if r["kind"] == "ConfigEntry"}
    assert users == {("api", "alice"), ("worker", "alice")}

    refused = ferry_cli(kubeconfig, "history", f"{other}/secret-plan")
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"forbidden: you may not get ConfigEntry {other}/secret-plan" in refused.stderr
    everywhere = ferry_cli(kubeconfig, "audit")
    assert everywhere.returncode == 1 and "forbidden" in everywhere.stderr
