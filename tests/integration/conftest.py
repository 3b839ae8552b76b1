"""The operator under test: `ferry run` from this tree, in its own process, as in production."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ferry.devenv.controlplane import WEBHOOK_CLIENT_CA, start_control_plane
from ferry.devenv.process import Process, free_port, log_tail
from ferry.devenv.stack import install_crds, run_operator
from ferry.devenv.vault import (
    KubeAdmin,
    Vault,
    operator_env,
    setup_kubernetes_auth,
    setup_operator_role,
)
from tests.support import Kube


@dataclass
class Operator:
    """Start, kill and restart the operator; tests that stop it must leave it running."""

    env: dict[str, str]
    log: Path
    workdir: Path
    api_port: int = field(default_factory=free_port)
    webhook_port: int | None = field(default_factory=free_port)  # None: serves no webhooks
    process: Process | None = None
    command: str = "run"  # or "webhooks": the admission webhooks alone

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 60) -> None:
        self.process = run_operator(
            self.env,
            self.workdir / "webhook",
            self.log,
            api_port=self.api_port,
            webhook_port=self.webhook_port,
            timeout=timeout,
            command=self.command,
        )

    def kill(self) -> None:
        """SIGKILL: no clean-up handlers run, as when a node dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop(timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def ensure_running(self) -> None:
        if self.process is None or not self.process.alive():
            self.start()

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)


@pytest.fixture(scope="session")
def ferry_operator(
    request: pytest.FixtureRequest,
    kube: Kube,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    workdir = tmp_path_factory.mktemp("operator")
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "FERRY_DATABASE_URL": database_url,
        "FERRY_REDIS_URL": redis_url,
    }
    # Imported here: webhook_client imports Operator from this module.
    from tests.integration.webhook_client import CLIENT_CA_ENV, api_server_pki

    if (pki := api_server_pki(kube)) is not None:  # the API server's client cert is required
        env[CLIENT_CA_ENV] = str(pki / WEBHOOK_CLIENT_CA)
    try:  # values from Vault when a Vault can be had here (its binary is built from Go)
        vault: Vault = request.getfixturevalue("vault")
    except pytest.skip.Exception as skipped:
        print(f"operator runs without Vault: {skipped}")
    else:  # entries in namespace N may name Vault paths under N/
        env.update(operator_env(vault, workdir / "vault", prefixes=["{namespace}"]))
    operator = Operator(env=env, log=workdir / "operator.log", workdir=workdir)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture
def operator(ferry_operator: Operator) -> Operator:
    """The session's operator, started again if an earlier test killed it."""
    ferry_operator.ensure_running()
    return ferry_operator


@dataclass(frozen=True)
class VaultKubernetesAuth:
    """Vault's Kubernetes auth method configured against the test kube-apiserver, and a role
    (read-only on ``kv_mount``) bound to the service account ``namespace/service_account``."""

    vault: Vault
    kube: KubeAdmin
    mount: str
    role: str
    kv_mount: str
    namespace: str
    service_account: str

    def token_file(self, directory: Path, *, duration: str = "1h") -> Path:
        """A fresh service-account token of the bound account, written where a pod would have it."""
        path = directory / "token"
        path.write_text(self.kube.token(self.namespace, self.service_account, duration=duration))
        return path


@pytest.fixture(scope="session")
def vault_kv(vault: Vault) -> Iterator[str]:
    """A KV v2 mount of this session's own (so a shared Vault is left as it was)."""
    mount = f"ferry-test-{uuid.uuid4().hex[:8]}"
    vault.enable_kv2(mount)
    try:
        yield mount
    finally:
        if vault.alive():
            vault.request("DELETE", f"sys/mounts/{mount}")


@pytest.fixture(scope="session")
def vault_kubernetes_auth(vault: Vault, vault_kv: str, kube: Kube) -> Iterator[VaultKubernetesAuth]:
    suffix = uuid.uuid4().hex[:8]
    admin = KubeAdmin(kube.kubectl_path, kube.kubeconfig)
    mount, namespace = f"kubernetes-{suffix}", f"ferry-vault-{suffix}"
    setup_kubernetes_auth(vault, admin, mount=mount, reviewer_namespace=namespace)
    admin.service_account(namespace, "ferry")
    setup_operator_role(
        vault,
        mount=mount,
        kv_mount=vault_kv,
        role="ferry",
        policy=f"ferry-read-{suffix}",
        service_account="ferry",
        namespace=namespace,
        ttl="1h",
    )
    try:
        yield VaultKubernetesAuth(vault, admin, mount, "ferry", vault_kv, namespace, "ferry")
    finally:
        if vault.alive():
            vault.request("DELETE", f"sys/auth/{mount}")
            vault.request("DELETE", f"sys/policies/acl/ferry-read-{suffix}")
        admin.run("delete", "namespace", namespace, "--wait=false")
        admin.run(
            "delete",
            "clusterrolebinding",
            f"vault-token-reviewer-{namespace}-auth-delegator",
            "--ignore-not-found",
        )


@pytest.fixture(scope="module")
def own_cluster(k8s_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """A kube-apiserver + etcd of this test module's own, with Ferry's CRDs: for tests that run
    operators of their own, or apply cluster-wide objects (webhook configurations) that the
    session's operator also owns."""
    control_plane = start_control_plane(tmp_path_factory.mktemp("own-k8s") / "k8s", k8s_bin_dir)
    try:
        install_crds(control_plane.kubectl, control_plane.kubeconfig)
        yield Kube(control_plane.kubeconfig, control_plane.kubectl)
    finally:
        control_plane.stop()
