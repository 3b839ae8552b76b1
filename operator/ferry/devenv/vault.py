"""A Vault dev server on a free loopback port, and the set-up Ferry needs in it.

Dev mode: in memory, unsealed, one root token, HTTP on 127.0.0.1 only — a test server, never a
production one (users point Ferry at their own Vault or OpenBao). The binary is built once from Go
modules by ``vault-binary.sh`` and cached like the control plane. Tests of a Vault restart use
:func:`start_persistent_vault` instead: file storage, so a restarted server comes back sealed
and then with everything it had, as a production Vault does (a dev server comes back empty).

Besides starting and stopping the server, this module configures what Ferry uses: a KV v2 mount,
the Kubernetes auth method against the local kube-apiserver (its CA and a TokenReview-capable
service-account token), and a read-only policy and role for the operator's service account.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferry.devenv.process import (
    Process,
    StartupError,
    build_cached,
    free_port,
    port_is_open,
    run_kubectl,
    spawn,
    wait_until,
)

BINARY_SCRIPT = Path(__file__).with_name("vault-binary.sh")

#: Where `ferry dev up` and the tests put the operator's identity and its Vault permissions.
OPERATOR_NAMESPACE = "ferry-system"
OPERATOR_SERVICE_ACCOUNT = "ferry"
OPERATOR_ROLE = "ferry"
OPERATOR_POLICY = "ferry-read"
REVIEWER_SERVICE_ACCOUNT = "vault-token-reviewer"


def ensure_vault_binary(timeout: float = 3000) -> Path:
    """The vault binary, building it once if needed (``FERRY_VAULT_BIN`` skips the build)."""
    return build_cached(BINARY_SCRIPT, "the Vault binary", timeout)


@dataclass
class Vault:
    """A running dev server (``process`` set) or one started elsewhere (``process`` None)."""

    address: str
    root_token: str = field(repr=False)
    process: Process | None = None
    directory: Path | None = None
    #: Only for a Vault with storage of its own (:func:`start_persistent_vault`).
    unseal_key: str | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def alive(self) -> bool:
        return self.process is None or self.process.alive()

    # -- the HTTP API, as the root token (set-up only; Ferry itself uses hvac)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """Call ``/v1/<path>``; return the JSON answer ({} for 204); raise ``VaultApiError``."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.address}/v1/{path}", data=data, method=method)
        req.add_header("X-Vault-Token", self.root_token if token is None else token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise VaultApiError(method, path, exc.code, _errors(exc.read())) from None
        return json.loads(text) if text else {}

    def health(self, timeout: float = 2) -> dict[str, Any]:
        """``sys/health`` (200 only when initialised, unsealed and active)."""
        return self.request("GET", "sys/health", timeout=timeout)

    def seal_status(self) -> dict[str, Any]:
        """``sys/seal-status``: answered (200) whether or not Vault is initialised or sealed."""
        return self.request("GET", "sys/seal-status", token="")

    def unseal(self, timeout: float = 60) -> None:
        """Unseal a Vault with storage of its own (:func:`start_persistent_vault`) and wait until
        it serves requests again."""
        assert self.unseal_key is not None, "a dev server is never sealed"
        self.request("PUT", "sys/unseal", {"key": self.unseal_key}, token="")
        if self.process is not None:
            wait_until(self.process, self._active, timeout=timeout, what=f"Vault at {self.address}")

    def _active(self) -> bool:
        try:
            return not self.health().get("sealed")
        except VaultApiError:  # standby or still sealed: 429, 503
            return False

    # -- set-up helpers

    def enable_kv2(self, mount: str) -> None:
        """Mount a KV v2 engine at ``mount`` (no-op if one is already there)."""
        mounts = self.request("GET", "sys/mounts")
        existing = (mounts.get("data") or mounts).get(f"{mount}/")
        if existing is not None:
            version = (existing.get("options") or {}).get("version")
            if existing.get("type") != "kv" or version != "2":
                raise StartupError(f'Vault already has a non-KV-v2 engine at "{mount}/"')
            return
        self.request("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})

    def write_policy(self, name: str, rules: str) -> None:
        self.request("PUT", f"sys/policies/acl/{name}", {"policy": rules})

    def create_token(
        self, policies: Iterable[str], *, ttl: str = "1h", renewable: bool = True
    ) -> str:
        """A child token of the root token with ``policies`` plus Vault's ``default`` policy
        (which lets a token look itself up and renew itself, as Ferry does)."""
        answer = self.request(
            "POST",
            "auth/token/create",
            {
                "policies": list(policies),
                "ttl": ttl,
                "renewable": renewable,
            },
        )
        return str(answer["auth"]["client_token"])

    def enable_kubernetes_auth(
        self,
        mount: str,
        *,
        kubernetes_host: str,
        ca_pem: str,
        reviewer_jwt: str,
    ) -> None:
        """Enable (once) and configure the Kubernetes auth method at ``mount``.

        Vault runs outside the cluster, so it gets the API server's address and CA and a
        service-account token allowed to call the TokenReview API (``system:auth-delegator``).
        """
        auths = self.request("GET", "sys/auth")
        if f"{mount}/" not in (auths.get("data") or auths):
            self.request("POST", f"sys/auth/{mount}", {"type": "kubernetes"})
        self.request(
            "POST",
            f"auth/{mount}/config",
            {
                "kubernetes_host": kubernetes_host,
                "kubernetes_ca_cert": ca_pem,
                "token_reviewer_jwt": reviewer_jwt,
                "disable_local_ca_jwt": True,
            },
        )

    def create_kubernetes_role(
        self,
        mount: str,
        role: str,
        *,
        service_account: str,
        namespace: str,
        policies: Iterable[str],
        ttl: str = "1h",
        max_ttl: str = "24h",
    ) -> None:
        self.request(
            "POST",
            f"auth/{mount}/role/{role}",
            {
                "bound_service_account_names": [service_account],
                "bound_service_account_namespaces": [namespace],
                "token_policies": list(policies),
                "token_ttl": ttl,
                "token_max_ttl": max_ttl,
            },
        )


class VaultApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, errors: str) -> None:
        super().__init__(f"Vault {method} /v1/{path} answered {status}: {errors}")
        self.status = status


def _errors(body: bytes) -> str:
    try:
        return "; ".join(json.loads(body).get("errors") or []) or "(no error text)"
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def start_vault(
    directory: Path,
    *,
    binary: Path | None = None,
    port: int | None = None,
    timeout: float = 60,
) -> Vault:
    """Start ``vault server -dev`` on 127.0.0.1; return once it is unsealed and active.

    Dev mode also listens on ``port + 1`` (cluster traffic), so both must be free. The root
    token is random (not the well-known dev default); ``HOME`` is the server's own
    directory so the CLI's token helper never writes ``~/.vault-token`` of the person running it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    binary = binary or ensure_vault_binary()
    port = port or _free_port_pair()
    token = "ferry-dev-" + secrets.token_urlsafe(18)  # ("hvs." is reserved for Vault's own)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "VAULT_DEV_ROOT_TOKEN_ID": token,
        "VAULT_DEV_LISTEN_ADDRESS": f"127.0.0.1:{port}",
    }
    argv = [str(binary), "server", "-dev", "-dev-no-store-token", "-log-level=warn"]
    process = spawn("vault", argv, directory / "vault.log", env=env, cwd=directory)
    vault = Vault(f"http://127.0.0.1:{port}", token, process, directory)

    def ready() -> bool:
        # Dev mode mounts KV v2 at secret/ after unsealing; wait for it so callers can use it.
        return not vault.health().get("sealed") and bool(vault.request("GET", "sys/mounts/secret"))

    wait_until(process, ready, timeout=timeout, what=f"an unsealed Vault on 127.0.0.1:{port}")
    return vault


def start_persistent_vault(
    directory: Path, *, binary: Path | None = None, timeout: float = 60
) -> Vault:
    """Start a Vault that keeps its data in ``directory`` (file storage), as a production Vault
    does; for tests of what a restart looks like to Ferry. The first start initialises it (one
    unseal key, kept in ``directory``), unseals it and mounts KV v2 at ``secret/``; a start on the
    same ``directory`` after :meth:`Vault.stop` comes back on the same address, **sealed** (its
    clients get 503 until :meth:`Vault.unseal`) and with everything it had: tokens, secrets,
    versions."""
    directory.mkdir(parents=True, exist_ok=True)
    binary = binary or ensure_vault_binary()
    state_file = directory / "init.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    port = int(state["port"]) if state else _free_port_pair()
    config = directory / "vault.hcl"
    config.write_text(
        f'storage "file" {{\n  path = "{directory / "data"}"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\n'
        "disable_mlock = true\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)}
    argv = [str(binary), "server", f"-config={config}", "-log-level=warn"]
    process = spawn("vault", argv, directory / "vault.log", env=env, cwd=directory)
    address = f"http://127.0.0.1:{port}"
    booting = Vault(address, "", process, directory)

    def answering() -> bool:
        with contextlib.suppress(OSError, VaultApiError):
            booting.seal_status()
            return True
        return False

    wait_until(process, answering, timeout=timeout, what=f"a Vault on 127.0.0.1:{port}")
    if state is not None:
        return Vault(address, state["root_token"], process, directory, state["unseal_key"])
    answer = booting.request(
        "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, token=""
    )
    vault = Vault(address, answer["root_token"], process, directory, answer["keys"][0])
    state_file.write_text(
        json.dumps({"port": port, "root_token": vault.root_token, "unseal_key": vault.unseal_key})
    )
    state_file.chmod(0o600)
    vault.unseal(timeout=timeout)
    vault.enable_kv2("secret")  # where dev mode mounts it
    return vault


def _free_port_pair(attempts: int = 50) -> int:
    """A free loopback port whose successor is free too (Vault's cluster listener, which a dev
    server and one with file storage both open on the next port)."""
    for _ in range(attempts):
        port = free_port()
        if port < 65535 and not port_is_open(port + 1):
            with contextlib.suppress(OSError), socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
                return port
    raise StartupError("found no two consecutive free loopback ports for Vault")


# --- the Kubernetes side of Kubernetes auth ----------------------------------------------------


@dataclass(frozen=True)
class KubeAdmin:
    """kubectl with the admin kubeconfig: enough to create service accounts and ask for tokens."""

    kubectl: Path
    kubeconfig: Path

    def run(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        return run_kubectl(self.kubectl, self.kubeconfig, *args, input=input, timeout=timeout)

    def apply(self, *objects: Mapping[str, Any]) -> None:
        self.run(
            "apply",
            "--server-side",
            "--field-manager=ferry-devenv",
            "-f",
            "-",
            input=yaml.safe_dump_all([dict(o) for o in objects]),
        )

    def service_account(self, namespace: str, name: str) -> None:
        """Create (idempotently) ``namespace`` and the service account ``name`` in it."""
        self.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            },
        )

    def token(self, namespace: str, name: str, *, duration: str = "1h") -> str:
        """A service-account token from the TokenRequest API (what kubelet projects into pods)."""
        return self.run("create", "token", name, "-n", namespace, f"--duration={duration}").strip()

    def server_and_ca(self) -> tuple[str, str]:
        """The API server's URL and its CA certificate (PEM) from the kubeconfig."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        else:
            path = Path(cluster["certificate-authority"])
            if not path.is_absolute():
                path = self.kubeconfig.parent / path
            ca = path.read_text()
        return str(cluster["server"]), ca


def setup_kubernetes_auth(
    vault: Vault,
    kube: KubeAdmin,
    *,
    mount: str = "kubernetes",
    reviewer_namespace: str = OPERATOR_NAMESPACE,
    reviewer: str = REVIEWER_SERVICE_ACCOUNT,
    reviewer_duration: str = "48h",
) -> None:
    """Configure Vault's Kubernetes auth method at ``mount`` against ``kube``'s API server.

    Creates a ``reviewer`` service account bound to ``system:auth-delegator`` (TokenReview), asks
    the API server for a token of it (no controller-manager runs locally, so no legacy token
    Secrets: the TokenRequest API, valid ``reviewer_duration``) and gives Vault that token, the
    API server's address and its CA.
    """
    kube.service_account(reviewer_namespace, reviewer)
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{reviewer}-{reviewer_namespace}-auth-delegator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": reviewer, "namespace": reviewer_namespace}
            ],
        }
    )
    host, ca = kube.server_and_ca()
    jwt = kube.token(reviewer_namespace, reviewer, duration=reviewer_duration)
    vault.enable_kubernetes_auth(mount, kubernetes_host=host, ca_pem=ca, reviewer_jwt=jwt)


def operator_policy(kv_mount: str, prefixes: Iterable[str] = ("",)) -> str:
    """A read-only policy for the operator: the data (and metadata) under ``prefixes``."""
    rules = []
    for prefix in prefixes:
        below = f"{prefix.strip('/')}/*" if prefix.strip("/") else "*"
        for kind in ("data", "metadata"):
            rules.append(f'path "{kv_mount}/{kind}/{below}" {{\n  capabilities = ["read"]\n}}')
    return "\n".join(rules) + "\n"


def setup_operator_role(
    vault: Vault,
    *,
    mount: str = "kubernetes",
    kv_mount: str = "secret",
    role: str = OPERATOR_ROLE,
    policy: str = OPERATOR_POLICY,
    service_account: str = OPERATOR_SERVICE_ACCOUNT,
    namespace: str = OPERATOR_NAMESPACE,
    prefixes: Iterable[str] = ("",),
    ttl: str = "1h",
    max_ttl: str = "24h",
) -> None:
    """The operator's read-only policy, and its Kubernetes auth role bound to its account."""
    vault.write_policy(policy, operator_policy(kv_mount, prefixes))
    vault.create_kubernetes_role(
        mount,
        role,
        service_account=service_account,
        namespace=namespace,
        policies=[policy],
        ttl=ttl,
        max_ttl=max_ttl,
    )


def operator_env(
    vault: Vault, directory: Path, *, mount: str = "secret", prefixes: Sequence[str] = ()
) -> dict[str, str]:
    """What `ferry run` needs to read ``secretData`` from this Vault (development and tests):
    the token auth method with ``vault``'s token, an HMAC key file made once in ``directory``,
    and the allowed path prefixes (``{namespace}`` stands for the entry's namespace)."""
    key_file = directory / "secret-hmac.key"
    if not key_file.exists():
        directory.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32) + "\n")
        key_file.chmod(0o600)
    return {
        "FERRY_VAULT_ADDRESS": vault.address,
        "FERRY_VAULT_AUTH_METHOD": "token",
        "FERRY_VAULT_TOKEN": vault.root_token,
        "FERRY_VAULT_MOUNT": mount,
        "FERRY_VAULT_HMAC_KEY_FILE": str(key_file),
        "FERRY_VAULT_ALLOWED_PATH_PREFIXES": " ".join(prefixes),
    }
