"""ConfigEntry.spec.secretData when Vault misbehaves, on schedule, and with Kubernetes auth — on the
real stack, each test with an operator process of its own configured for what it proves.

- Vault down: the condition says so, the Secret stays exactly as it was, and the entry converges
  once a Vault answers at the same address again.
- Scheduled rotation: a new version reaches the Secret (and rolls ``reload-on`` workloads) with no
  annotation; an unchanged value writes nothing, across refreshes Vault's audit log proves happened.
- A Vault policy that does not cover the path: ``VaultPermissionDenied`` naming the path, Stalled.
- Kubernetes auth: the operator logs in with a service-account token minted by the API server it
  watches (TokenRequest), which Vault checks with TokenReview, and materialises the Secret.
- A deleted version: ``SecretVersionDeleted``, and the previous Secret stays (no silent fallback
  to an older version); undeleted, the entry is Ready again.

Why an API server of this module's own: ``ferry run`` is cluster-wide and registers its own
admission webhooks, so a second operator on the session's API server would reconcile the session's
entries (and the session's operator these, against another Vault) and take the webhook
configurations over. Here each test's operator is the only one acting on this module's API server;
PostgreSQL and Redis are the session's (namespaces are unique, so nothing collides).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ferry.devenv.controlplane import WEBHOOK_CLIENT_CA
from ferry.devenv.vault import (
    KubeAdmin,
    Vault,
    VaultApiError,
    operator_env,
    setup_kubernetes_auth,
    setup_operator_role,
    start_persistent_vault,
    start_vault,
)
from tests.integration.conftest import Operator
from tests.integration.test_entries import deployment, template_hash, wait_ready
from tests.integration.test_secrets import put_secret, secret_data, with_secret
from tests.integration.webhook_client import CLIENT_CA_ENV, api_server_pki
from tests.support import Kube, condition, entry, eventually, get_or_none

pytestmark = pytest.mark.integration

StartOperator = Callable[[Mapping[str, str]], Operator]
StartVault = Callable[..., Vault]


# --- fixtures: an API server of this module's own, operators and Vaults of each test's own -----


@pytest.fixture(scope="module")
def cluster(own_cluster: Kube) -> Kube:
    """This module's own API server: its operators would otherwise act on the session's objects
    and take over the session operator's webhook configurations."""
    return own_cluster


@pytest.fixture
def start_operator(
    cluster: Kube, database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[StartOperator]:
    """Start `ferry run` against this module's API server with ``vault_env`` on top of the base
    settings; stopped at the end of the test, whatever happened (its log tail is printed, so a
    failure shows it)."""
    started: list[Operator] = []
    pki = api_server_pki(cluster)
    assert pki is not None  # this module's own control plane presents a client certificate

    def start(vault_env: Mapping[str, str]) -> Operator:
        workdir = tmp_path / f"operator-{len(started)}"
        workdir.mkdir()
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "FERRY_DATABASE_URL": database_url,
            "FERRY_REDIS_URL": redis_url,
            # The API server's client certificate is required, as in a hardened installation.
            CLIENT_CA_ENV: str(pki / WEBHOOK_CLIENT_CA),
            # Retries of a failed reconcile (Vault down) at most 2 s apart, to keep the test short.
            "FERRY_RECONCILE_REQUEUE_MAX_SECONDS": "2",
            **vault_env,
        }
        operator = Operator(env=env, log=workdir / "operator.log", workdir=workdir)
        started.append(operator)
        operator.start()
        return operator

    try:
        yield start
    finally:
        for operator in started:
            operator.stop()
            print(f"--- {operator.log}\n{operator.log_tail(60)}")


@pytest.fixture
def start_own_vault(vault_binary: Path, tmp_path: Path) -> Iterator[StartVault]:
    """Private Vaults (for tests that stop one or turn on its audit log), all stopped at the end
    of the test: dev servers, or with ``persistent=True`` one with storage of its own, which
    ``again=`` (that Vault, stopped) starts once more, sealed."""
    started: list[Vault] = []

    def start(*, persistent: bool = False, again: Vault | None = None) -> Vault:
        directory = tmp_path / f"vault-{len(started)}"
        if again is not None:
            assert again.directory is not None
            directory, persistent = again.directory, True
        if persistent:
            server = start_persistent_vault(directory, binary=vault_binary)
        else:
            server = start_vault(directory, binary=vault_binary)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# --- helpers -------------------------------------------------------------------------------------


def ce(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = get_or_none(kube, "configentry", name, "-n", ns)
    return found


def resource_version(kube: Kube, kind: str, ns: str, name: str) -> str:
    return str(kube.get_json(kind, name, "-n", ns)["metadata"]["resourceVersion"])


def wait_secrets_failed(
    kube: Kube, ns: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The entry once its SecretsResolved condition is False with ``reason``."""

    def probe() -> dict[str, Any] | None:
        obj = ce(kube, ns, name)
        found = condition(obj, "SecretsResolved")
        return obj if found and found["status"] == "False" and found["reason"] == reason else None

    return eventually(probe, timeout=timeout, what=f"SecretsResolved=False ({reason})")


def refresh(kube: Kube, ns: str, name: str) -> None:
    """What a user does to have Vault read now: a new value of ``ferry.dev/refresh``."""
    stamp = uuid.uuid4().hex[:8]
    kube.kubectl("annotate", "configentry", name, "-n", ns, f"ferry.dev/refresh={stamp}",
                 "--overwrite")  # fmt: skip


def enable_file_audit(vault: Vault, directory: Path) -> Path:
    """Vault's own record of every request it answers (the file audit device)."""
    log = directory / "vault-audit.log"
    vault.request("PUT", "sys/audit/file", {"type": "file", "options": {"file_path": str(log)}})
    return log


def kv_reads(audit_log: Path, mount: str, path: str) -> int:
    """KV v2 reads of ``path`` Vault answered, counted from its audit log."""
    count = 0
    for line in audit_log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        request = record.get("request") or {}
        if (
            record.get("type") == "request"
            and request.get("operation") == "read"
            and request.get("path") == f"{mount}/data/{path}"
        ):
            count += 1
    return count


@contextlib.contextmanager
def stopped(vault: Vault) -> Iterator[None]:
    """Vault down for the block. Its port (and dev mode's cluster port, the next one) stay bound
    by this process, without listening: a client gets "connection refused" as from a stopped
    server, and no other process of a busy machine takes the address meanwhile."""
    port = int(vault.address.rsplit(":", 1)[1])
    vault.stop()
    with contextlib.ExitStack() as held:
        for number in (port, port + 1):
            sock = held.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # over TIME_WAIT
            sock.bind(("127.0.0.1", number))
        yield


def restart(vault: Vault, start_own_vault: StartVault) -> None:
    """The same Vault started again on its storage, as after a crash or an upgrade: sealed (its
    clients get 503, which is retried) until it is unsealed here, then with everything it had —
    so nothing Ferry reads on the way back can be a half-restored Vault."""
    back = start_own_vault(again=vault)
    assert back.address == vault.address
    back.unseal()


@contextlib.contextmanager
def token_reading(vault: Vault, policy: str, path_glob: str) -> Iterator[str]:
    """A token whose policy ``policy`` lets it read ``secret/data/<path_glob>`` only (rewrite the
    policy to change that); token and policy are gone after the block."""
    vault.write_policy(policy, read_rule(path_glob))
    token = vault.create_token([policy])
    try:
        yield token
    finally:
        vault.request("POST", "auth/token/revoke", {"token": token})
        vault.request("DELETE", f"sys/policies/acl/{policy}")


def read_rule(path_glob: str) -> str:
    return f'path "secret/data/{path_glob}" {{ capabilities = ["read"] }}\n'


def wait_password(kube: Kube, ns: str, value: str, *, timeout: float = 30, what: str) -> None:
    """Until the Secret ``app`` holds exactly ``DB_PASSWORD: value``."""
    eventually(
        lambda: secret_data(kube, ns, "app") == {"DB_PASSWORD": value}, timeout=timeout, what=what
    )


# --- Vault down ----------------------------------------------------------------------------------


def test_vault_down_leaves_the_secret_untouched_and_converges_when_it_returns(
    cluster: Kube, start_own_vault: StartVault, start_operator: StartOperator, tmp_path: Path
) -> None:
    kube = cluster
    vault = start_own_vault(persistent=True)
    operator = start_operator(operator_env(vault, tmp_path / "keys", prefixes=["{namespace}"]))
    ns = kube.namespace("vault-down")
    put_secret(vault, f"{ns}/db", {"password": "before-the-outage"})
    kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
    wait_ready(kube, ns, "app")
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "before-the-outage"}
    kept_version = resource_version(kube, "secret", ns, "app")
    # A new version the operator has no reason to read yet (no refresh is due): what it must
    # find once Vault is back.
    put_secret(vault, f"{ns}/db", {"password": "after-the-outage"})

    with stopped(vault):
        refresh(kube, ns, "app")  # the operator has to go to Vault now, and finds it down
        down = wait_secrets_failed(kube, ns, "app", "VaultUnavailable")
        message = condition(down, "SecretsResolved")["message"]
        assert message.startswith("spec.secretData.DB_PASSWORD: ")
        assert f"Vault at {vault.address} is unreachable" in message
        assert f'reading "{ns}/db"' in message
        assert condition(down, "Reconciling")["status"] == "True"
        assert condition(down, "Ready")["status"] == "False"
        assert condition(down, "Stalled") is None  # kstatus: present only while True
        # Meanwhile (the operator retrying with backoff) nothing is touched.
        time.sleep(3)
        assert resource_version(kube, "secret", ns, "app") == kept_version
        assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "before-the-outage"}
        assert operator.process is not None and operator.process.alive()

    restart(vault, start_own_vault)
    wait_password(
        kube, ns, "after-the-outage", timeout=60, what="the Secret once Vault is back (no action)"
    )
    ready = wait_ready(kube, ns, "app")
    assert condition(ready, "SecretsResolved")["status"] == "True"
    assert condition(ready, "Reconciling") is None  # cleared: kstatus' absence


def test_an_entry_whose_first_read_finds_vault_down_converges_when_it_returns(
    cluster: Kube, start_own_vault: StartVault, start_operator: StartOperator, tmp_path: Path
) -> None:
    """No refresh annotation here: the retries (with backoff, at most 2 s apart) must go to
    Vault again. A long minimum refresh interval (5 min, a setting) makes the difference between
    "retried" and "read again once the shared result expires" plain."""
    kube = cluster
    vault = start_own_vault(persistent=True)
    env = operator_env(vault, tmp_path / "keys", prefixes=["{namespace}"])
    start_operator({**env, "FERRY_VAULT_MIN_REFRESH_SECONDS": "300"})
    ns = kube.namespace("vault-down-new")
    put_secret(vault, f"{ns}/db", {"password": "first-value"})
    with stopped(vault):
        kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
        down = wait_secrets_failed(kube, ns, "app", "VaultUnavailable")
        assert condition(down, "Reconciling")["status"] == "True"
        assert secret_data(kube, ns, "app") is None

    restart(vault, start_own_vault)
    wait_password(
        kube, ns, "first-value", what="the Secret once Vault is back (retries at most 2 s apart)"
    )
    wait_ready(kube, ns, "app")


# --- scheduled rotation --------------------------------------------------------------------------


def test_a_new_version_arrives_on_schedule_and_an_unchanged_one_writes_nothing(
    cluster: Kube, start_own_vault: StartVault, start_operator: StartOperator, tmp_path: Path
) -> None:
    kube = cluster
    vault = start_own_vault()
    audit = enable_file_audit(vault, tmp_path)
    env = operator_env(vault, tmp_path / "keys", prefixes=["{namespace}"])
    start_operator({**env, "FERRY_VAULT_MIN_REFRESH_SECONDS": "1"})
    ns = kube.namespace("rotate")
    path = f"{ns}/db"
    put_secret(vault, path, {"password": "version-one"})
    kube.apply(deployment("web", ns, "app"))
    kube.apply(entry("app", ns, with_secret(ns, path, refreshInterval="2s")))
    first = wait_ready(kube, ns, "app")
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "version-one"}
    eventually(lambda: template_hash(kube, ns, "web") == first["status"]["hash"])

    # A new version in Vault, and nothing else: the next scheduled read brings it.
    assert put_secret(vault, path, {"password": "version-two"}) == 2
    wait_password(kube, ns, "version-two", what="version 2 in the Secret without any annotation")
    rotated = eventually(
        lambda: (o := ce(kube, ns, "app")) and o["status"].get("revision") == 2 and o,
        what="revision 2 recorded for the rotation",
    )
    assert rotated["status"]["secrets"][0]["version"] == 2
    assert "ferry.dev/refresh" not in (rotated["metadata"].get("annotations") or {})
    eventually(
        lambda: template_hash(kube, ns, "web") == rotated["status"]["hash"],
        what="the reload-on workload rolled for the new version",
    )

    # The same version on later refreshes: nothing is written anywhere.
    time.sleep(1)  # let the rotation's own follow-up reconciles settle
    before = {
        "secret": resource_version(kube, "secret", ns, "app"),
        "configmap": resource_version(kube, "configmap", ns, "app"),
        "entry": resource_version(kube, "configentry", ns, "app"),
        "deployment": resource_version(kube, "deployment", ns, "web"),
    }
    reads = kv_reads(audit, "secret", path)
    eventually(
        lambda: kv_reads(audit, "secret", path) >= reads + 3,
        timeout=60,
        what="three more scheduled reads of the path in Vault's audit log",
    )
    after = {
        "secret": resource_version(kube, "secret", ns, "app"),
        "configmap": resource_version(kube, "configmap", ns, "app"),
        "entry": resource_version(kube, "configentry", ns, "app"),
        "deployment": resource_version(kube, "deployment", ns, "web"),
    }
    assert after == before
    settled = ce(kube, ns, "app")
    assert settled is not None and settled["status"]["revision"] == 2
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "version-two"}


# --- permission denied ---------------------------------------------------------------------------


def test_a_path_outside_the_operators_vault_policy_is_permission_denied(
    cluster: Kube, vault: Vault, start_operator: StartOperator, tmp_path: Path
) -> None:
    kube = cluster
    ns = kube.namespace("denied")
    with token_reading(vault, f"ferry-narrow-{ns}", f"{ns}/allowed/*") as token:
        env = operator_env(vault, tmp_path / "keys", prefixes=["{namespace}"])
        start_operator({**env, "FERRY_VAULT_TOKEN": token})
        put_secret(vault, f"{ns}/allowed/db", {"password": "readable"})
        put_secret(vault, f"{ns}/db", {"password": "not-for-ferry"})
        kube.apply(entry("app", ns, with_secret(ns, f"{ns}/allowed/db")))
        wait_ready(kube, ns, "app")
        assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "readable"}
        kept_version = resource_version(kube, "secret", ns, "app")

        # The namespace may name the path (admission lets it through), Vault's policy does not.
        kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
        denied = wait_secrets_failed(kube, ns, "app", "VaultPermissionDenied")
        message = condition(denied, "SecretsResolved")["message"]
        assert message.startswith("spec.secretData.DB_PASSWORD: ")
        assert f'denied reading "{ns}/db" from KV v2 mount "secret"' in message
        assert "permission denied" in message
        assert token not in message and "not-for-ferry" not in message
        assert condition(denied, "Stalled")["status"] == "True"
        assert condition(denied, "Ready")["status"] == "False"
        assert condition(denied, "Reconciling") is None
        assert resource_version(kube, "secret", ns, "app") == kept_version
        assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "readable"}
        warned = eventually(  # Events are posted in the background, after the status
            lambda: [
                e
                for e in kube.get_json("events", "-n", ns)["items"]
                if e.get("reason") == "VaultPermissionDenied"
            ],
            what="a VaultPermissionDenied Event",
        )
        assert warned[0]["type"] == "Warning" and f'"{ns}/db"' in warned[0]["message"]


def test_a_policy_fixed_in_vault_is_picked_up_by_the_resync_without_touching_the_entry(
    cluster: Kube, vault: Vault, start_operator: StartOperator, tmp_path: Path
) -> None:
    """A denial is not retried with backoff (docs/secrets.md); what does bring the secret once
    the platform team fixes the policy in Vault is the periodic resync, with nothing done to the
    entry (a short resync here; 300 s by default)."""
    kube = cluster
    ns = kube.namespace("policy-fixed")
    policy = f"ferry-fixed-{ns}"
    with token_reading(vault, policy, f"{ns}/other") as token:
        env = operator_env(vault, tmp_path / "keys", prefixes=["{namespace}"])
        start_operator(
            {
                **env,
                "FERRY_VAULT_TOKEN": token,
                "FERRY_RECONCILE_RESYNC_SECONDS": "4",
                "FERRY_VAULT_MIN_REFRESH_SECONDS": "1",
            }
        )
        put_secret(vault, f"{ns}/db", {"password": "readable-now"})
        kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
        denied = wait_secrets_failed(kube, ns, "app", "VaultPermissionDenied")
        assert condition(denied, "Stalled")["status"] == "True"
        assert secret_data(kube, ns, "app") is None

        vault.write_policy(policy, read_rule(f"{ns}/*"))
        wait_password(kube, ns, "readable-now", what="the Secret after the policy was fixed")
        ready = wait_ready(kube, ns, "app")
        assert ready["metadata"]["generation"] == denied["metadata"]["generation"]
        assert ready["metadata"].get("annotations", {}).get("ferry.dev/refresh") is None
        assert condition(ready, "Stalled") is None


# --- Kubernetes auth -----------------------------------------------------------------------------


def test_the_operator_logs_in_with_kubernetes_auth_and_materialises_the_secret(
    cluster: Kube, vault: Vault, vault_kv: str, start_operator: StartOperator, tmp_path: Path
) -> None:
    """Vault's Kubernetes auth method against this module's API server (its CA, a TokenReview
    service account), a role bound to the operator's service account, and the operator given
    nothing but a token file minted by that API server — as kubelet would project it."""
    kube = cluster
    suffix = uuid.uuid4().hex[:8]
    mount, system_ns, role = f"kubernetes-{suffix}", f"ferry-system-{suffix}", f"ferry-{suffix}"
    admin = KubeAdmin(kube.kubectl_path, kube.kubeconfig)
    try:
        setup_kubernetes_auth(vault, admin, mount=mount, reviewer_namespace=system_ns)
        admin.service_account(system_ns, "ferry")
        setup_operator_role(
            vault,
            mount=mount,
            kv_mount=vault_kv,
            role=role,
            policy=f"ferry-read-{suffix}",
            service_account="ferry",
            namespace=system_ns,
        )
        token_file = tmp_path / "serviceaccount" / "token"
        token_file.parent.mkdir()
        token_file.write_text(admin.token(system_ns, "ferry", duration="1h"))
        env = {
            **operator_env(vault, tmp_path / "keys", mount=vault_kv, prefixes=["{namespace}"]),
            "FERRY_VAULT_AUTH_METHOD": "kubernetes",
            "FERRY_VAULT_ROLE": role,
            "FERRY_VAULT_KUBERNETES_MOUNT": mount,
            "FERRY_VAULT_SERVICE_ACCOUNT_TOKEN_FILE": str(token_file),
        }
        del env["FERRY_VAULT_TOKEN"]  # nothing to read Vault with but the service account
        operator = start_operator(env)

        ns = kube.namespace("k8s-auth")
        value = uuid.uuid4().hex
        vault.request("POST", f"{vault_kv}/data/{ns}/db", {"data": {"password": value}})
        kube.apply(entry("app", ns, with_secret(ns, f"{ns}/db")))
        ready = wait_ready(kube, ns, "app")
        assert secret_data(kube, ns, "app") == {"DB_PASSWORD": value}
        assert condition(ready, "SecretsResolved")["status"] == "True"

        log = operator.log.read_text(errors="replace")
        assert f"(Kubernetes auth, mount {mount}, role {role};" in log
        assert token_file.read_text().strip() not in log
        # Vault's side: a token issued by that role to that service account exists.
        accessors = vault.request("LIST", "auth/token/accessors")["data"]["keys"]
        issued = []
        for accessor in accessors:
            try:
                meta = (
                    vault.request("POST", "auth/token/lookup-accessor", {"accessor": accessor})[
                        "data"
                    ].get("meta")
                    or {}
                )
            except VaultApiError:
                continue  # revoked meanwhile by another test
            if meta.get("role") == role:
                issued.append(meta)
        assert issued, "no Vault token issued through the Kubernetes auth role"
        assert all(m.get("service_account_namespace") == system_ns for m in issued)
        assert all(m.get("service_account_name") == "ferry" for m in issued)
    finally:
        if vault.alive():
            vault.request("DELETE", f"sys/auth/{mount}")
            vault.request("DELETE", f"sys/policies/acl/ferry-read-{suffix}")


# --- a deleted version ---------------------------------------------------------------------------


def test_a_deleted_version_is_reported_and_the_previous_secret_stays(
    cluster: Kube, vault: Vault, start_operator: StartOperator, tmp_path: Path
) -> None:
    kube = cluster
    start_operator(operator_env(vault, tmp_path / "keys", prefixes=["{namespace}"]))
    ns = kube.namespace("deleted")
    path = f"{ns}/db"
    put_secret(vault, path, {"password": "version-one"})
    put_secret(vault, path, {"password": "version-two"})
    kube.apply(entry("app", ns, with_secret(ns, path)))
    ready = wait_ready(kube, ns, "app")
    assert ready["status"]["secrets"][0]["version"] == 2
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "version-two"}
    kept_version = resource_version(kube, "secret", ns, "app")

    # `vault kv delete secret/<path>`: a soft delete of the latest version (2).
    vault.request("DELETE", f"secret/data/{path}")
    refresh(kube, ns, "app")
    deleted = wait_secrets_failed(kube, ns, "app", "SecretVersionDeleted")
    message = condition(deleted, "SecretsResolved")["message"]
    assert message == (
        f'spec.secretData.DB_PASSWORD: version 2 of Vault secret "{path}" (mount "secret") '
        "was deleted"
    )
    assert condition(deleted, "Stalled")["status"] == "True"
    assert condition(deleted, "Ready")["status"] == "False"
    # The previous Secret stays: neither emptied nor silently rolled back to version 1.
    time.sleep(2)
    assert resource_version(kube, "secret", ns, "app") == kept_version
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "version-two"}
    unchanged = ce(kube, ns, "app")
    assert unchanged is not None and unchanged["status"]["revision"] == ready["status"]["revision"]

    # Undeleted in Vault (`vault kv undelete -versions=2`), the next refresh is Ready again.
    vault.request("POST", f"secret/undelete/{path}", {"versions": [2]})
    refresh(kube, ns, "app")
    eventually(
        lambda: (
            (found := condition(ce(kube, ns, "app"), "SecretsResolved"))
            and found["status"] == "True"
        ),
        what="SecretsResolved=True after the undelete",
    )
    wait_ready(kube, ns, "app")
    assert secret_data(kube, ns, "app") == {"DB_PASSWORD": "version-two"}
