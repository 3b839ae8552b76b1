"""The whole local stack for `ferry dev` and the test suite: control plane, PostgreSQL, Redis,
the CRDs installed and, for `ferry dev up`, a Vault dev server and the operator from the working
tree.

State (ports, pids, logs) lives in one JSON file so `ferry dev down` stops exactly what `up`
started, from another process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ferry.adapters.postgres import migrate
from ferry.devenv.controlplane import ControlPlane, ensure_binaries, start_control_plane
from ferry.devenv.historyapi import start_history_api
from ferry.devenv.postgres import Postgres, start_postgres
from ferry.devenv.process import (
    Process,
    free_port,
    kubectl_cache,
    run_kubectl,
    spawn,
    wait_until,
)
from ferry.devenv.redis import start_redis
from ferry.devenv.vault import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    KubeAdmin,
    ensure_vault_binary,
    operator_env,
    setup_kubernetes_auth,
    setup_operator_role,
    start_vault,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
CRDS_DIR = REPO_ROOT / "crds"


@dataclass
class Stack:
    directory: Path
    kubeconfig: Path
    kubectl: Path
    database_url: str
    redis_url: str
    processes: list[Process] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    scratch: list[Path] = field(default_factory=list)  # dirs outside ``directory`` to remove
    bin_dirs: list[Path] = field(default_factory=list)  # more tools for PATH (vault)

    def env(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(kubectl_cache(self.kubeconfig)),
            "FERRY_DATABASE_URL": self.database_url,
            "FERRY_REDIS_URL": self.redis_url,
            **self.extra,
        }

    def alive(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)

    def save(self, path: Path) -> None:
        data = {
            "directory": str(self.directory),
            "kubeconfig": str(self.kubeconfig),
            "kubectl": str(self.kubectl),
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "processes": [p.to_dict() for p in self.processes],
            "extra": self.extra,
            "scratch": [str(p) for p in self.scratch],
            "bin_dirs": [str(p) for p in self.bin_dirs],
        }
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> Stack:
        data = json.loads(path.read_text())
        return cls(
            directory=Path(data["directory"]),
            kubeconfig=Path(data["kubeconfig"]),
            kubectl=Path(data["kubectl"]),
            database_url=data["database_url"],
            redis_url=data["redis_url"],
            processes=[Process.from_dict(p) for p in data["processes"]],
            extra=dict(data.get("extra", {})),
            scratch=[Path(p) for p in data.get("scratch", [])],
            bin_dirs=[Path(p) for p in data.get("bin_dirs", [])],
        )


def install_crds(kubectl: Path, kubeconfig: Path, crds_dir: Path = CRDS_DIR) -> None:
    """Server-side apply every CRD and wait (bounded) until the API server serves them.

    ``Established`` is not yet servable: for a moment each new resource's watch cache answers
    429 "storage is (re)initializing", which an operator started then logs as an error before
    retrying. One list of each waits that out (kubectl retries a 429 as its Retry-After says,
    within ``run_kubectl``'s timeout)."""
    run_kubectl(
        kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crds_dir)
    )
    selector = ("-l", "app.kubernetes.io/part-of=ferry")
    run_kubectl(
        kubectl,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "crd",
        *selector,
        "--timeout=60s",
    )
    names = run_kubectl(
        kubectl, kubeconfig, "get", "crd", *selector, "-o", "jsonpath={.items[*].metadata.name}"
    )
    run_kubectl(kubectl, kubeconfig, "get", ",".join(names.split()), "-A", "-o", "name")


def start_stack(directory: Path, *, with_operator: bool = False, with_vault: bool = False) -> Stack:
    """Start everything in ``directory``; on any failure stop what was started and re-raise.

    ``with_vault`` adds a Vault dev server (``VAULT_ADDR``/``VAULT_TOKEN`` in ``env()``) with
    Kubernetes auth configured against the control plane (see :func:`start_dev_vault`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    bin_dir = ensure_binaries()
    started: list[Process] = []
    postgres: Postgres | None = None
    try:
        control_plane: ControlPlane = start_control_plane(directory / "k8s", bin_dir)
        started += control_plane.processes
        postgres = start_postgres(directory / "postgres")
        started.append(postgres.process)
        redis = start_redis(directory / "redis")
        started.append(redis.process)
        install_crds(control_plane.kubectl, control_plane.kubeconfig)
        stack = Stack(
            directory=directory,
            kubeconfig=control_plane.kubeconfig,
            kubectl=control_plane.kubectl,
            database_url=postgres.url,
            redis_url=redis.url,
            processes=started,
            scratch=[postgres.directory],
        )
        # The operator's webhooks accept calls only from the API server's client certificate.
        stack.extra["FERRY_WEBHOOK_CLIENT_CA_FILE"] = str(control_plane.webhook_client_ca)
        if with_vault:
            start_dev_vault(stack)  # appends to ``started`` (the same list as stack.processes)
        if with_operator:  # appends to ``started`` (the same list as stack.processes)
            start_ferry(stack)
        # `ferry history|diff|export|audit` read through the history.ferry.dev API (decision 0021).
        migrate(stack.database_url)  # as the operator does at start: the server reads the tables
        history_api = start_history_api(
            directory / "history-api",
            kubectl=control_plane.kubectl,
            kubeconfig=control_plane.kubeconfig,
            env={**os.environ, **stack.env()},
        )
        started.append(history_api.process)
    except BaseException:
        for process in reversed(started):
            process.stop()
        if postgres is not None:
            shutil.rmtree(postgres.directory, ignore_errors=True)
        raise
    return stack


def start_dev_vault(stack: Stack) -> None:
    """Start Vault in dev mode beside the stack and configure what Ferry uses in it.

    KV v2 at ``secret/`` (dev mode's own mount), the Kubernetes auth method at ``kubernetes/``
    against the stack's API server, and a read-only role ``ferry`` for the service account
    ``ferry-system/ferry`` (so the operator can log in the way it does in a cluster). The
    operator started by ``ferry dev up`` uses the root token exported as ``VAULT_TOKEN``.
    """
    binary = ensure_vault_binary()
    vault = start_vault(stack.directory / "vault", binary=binary)
    assert vault.process is not None  # we started it
    stack.processes.append(vault.process)
    kube = KubeAdmin(stack.kubectl, stack.kubeconfig)
    setup_kubernetes_auth(vault, kube)
    setup_operator_role(vault)
    kube.service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
    stack.extra.update({"VAULT_ADDR": vault.address, "VAULT_TOKEN": vault.root_token})
    # The operator reads the dev Vault with its token; entries in namespace N may name paths
    # under N/ (and what the namespace's ferry.dev/vault-paths annotation allows).
    stack.extra.update(operator_env(vault, stack.directory, prefixes=["{namespace}"]))
    stack.bin_dirs.append(binary.parent)


def start_ferry(stack: Stack, *, together: bool = False, timeout: float = 60) -> Process:
    """Ferry as the chart runs it: `ferry run` reconciling (returned, e.g. for its CPU time) and
    `ferry webhooks` answering admission beside it (decision 0035), both added to
    ``stack.processes``. ``together``: `ferry run --webhook-port` alone, one process."""
    operator = start_operator(stack, timeout=timeout, webhooks=together)
    stack.processes.append(operator)
    if not together:
        stack.processes.append(start_webhooks(stack, timeout=timeout))
    return operator


def start_operator(stack: Stack, *, timeout: float = 60, webhooks: bool = True) -> Process:
    """Run `ferry run` from the working tree against the stack; ready once /readyz answers.
    Without ``webhooks`` it serves none: :func:`start_webhooks` beside it, as in a cluster."""
    return _start(stack, "run", "FERRY_API_URL", webhooks=webhooks, timeout=timeout)


def start_webhooks(stack: Stack, *, timeout: float = 60) -> Process:
    """Run `ferry webhooks` (the admission webhooks, reconciling nothing) against the stack; it
    registers them with a certificate of its own. Its /metrics: ``FERRY_WEBHOOKS_API_URL``."""
    return _start(stack, "webhooks", "FERRY_WEBHOOKS_API_URL", webhooks=True, timeout=timeout)


def _start(stack: Stack, command: str, url: str, *, webhooks: bool, timeout: float) -> Process:
    """``ferry <command>`` with a log and a webhook directory of its own in the stack's; the URL
    of its API port in ``stack.extra[url]``."""
    api_port = free_port()
    stack.extra[url] = f"http://127.0.0.1:{api_port}"
    name = _role(command)
    return run_operator(
        {**os.environ, **stack.env()},
        stack.directory / ("webhook" if command == "run" else f"{name}-webhook"),
        stack.directory / f"{name}.log",
        api_port=api_port,
        webhook_port=free_port() if webhooks else None,
        timeout=timeout,
        command=command,
    )


def _role(command: str) -> str:
    """What a `ferry <command>` process is called in a stack: ``operator`` for `ferry run`."""
    return "operator" if command == "run" else command


def run_operator(
    env: Mapping[str, str],
    webhook_dir: Path,
    log: Path,
    *,
    api_port: int,
    webhook_port: int | None,
    timeout: float = 60,
    command: str = "run",
) -> Process:
    """`python -m ferry run` in its own process (as in production), once its /readyz answers:
    indexes filled and admission webhooks registered. Shared by `ferry dev` and the tests.
    ``webhook_port`` None: no webhooks (a replica beside `ferry webhooks`); ``command``
    "webhooks": that process instead."""
    argv = [sys.executable, "-m", "ferry", command, "--api-port", str(api_port)]
    if webhook_port is not None:
        argv += ["--webhook-port", str(webhook_port), "--webhook-dir", str(webhook_dir)]
    process = spawn(f"ferry-{_role(command)}", argv, log, env=dict(env))

    def ready() -> bool:
        url = f"http://127.0.0.1:{api_port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    wait_until(process, ready, timeout=timeout, what="the operator's /readyz")
    return process
