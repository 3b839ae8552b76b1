"""``ferry history-api`` on loopback, registered as an APIService of the local control plane.

The API server reaches it through a Service of ``type: ExternalName`` with ``externalName:
localhost`` (loopback addresses are refused in Endpoints and EndpointSlices), at the port the
APIService names, and verifies its serving certificate, issued for
``<service>.<namespace>.svc``, against the APIService's ``caBundle`` (no
``insecureSkipTLSVerify``). Shared by the tests and ``ferry dev``.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ferry.devenv import stack as devstack  # a module: stack.py may import this one
from ferry.devenv.process import Process, free_port, port_is_open, spawn, wait_until
from ferry.history.resources import GROUP, VERSION
from ferry.tls import serving_certificate

NAMESPACE = "ferry-system"
SERVICE = "ferry-history"
APISERVICE = f"{VERSION}.{GROUP}"


@dataclass
class HistoryApi:
    process: Process
    port: int
    kubectl: Path
    kubeconfig: Path
    log: Path

    def stop(self) -> None:
        """Unregister (so the API server stops routing to it), then stop the process."""
        try:
            devstack.run_kubectl(
                self.kubectl, self.kubeconfig, "delete", "apiservice", APISERVICE,
                "--ignore-not-found", "--wait=false",
            )  # fmt: skip
        finally:
            self.process.stop()


def start_history_api(
    directory: Path,
    *,
    kubectl: Path,
    kubeconfig: Path,
    env: Mapping[str, str],
    timeout: float = 90,
) -> HistoryApi:
    """Start the server (``env`` carries ``FERRY_DATABASE_URL`` and the server's own
    ``KUBECONFIG``), register its APIService and return once the API server says Available."""
    directory.mkdir(parents=True, exist_ok=True)
    host = f"{SERVICE}.{NAMESPACE}.svc"
    certificate = serving_certificate(directory / "tls", host)
    port = free_port()
    log = directory / "history-api.log"
    argv = [sys.executable, "-m", "ferry", "history-api", "--port", str(port)]
    argv += ["--cert-dir", str(directory / "tls"), "--cert-host", host]
    process = spawn("ferry-history-api", argv, log, env=dict(env))
    try:
        wait_until(process, lambda: port_is_open(port), timeout=timeout, what="history-api port")
        register(kubectl, kubeconfig, port, certificate.ca.read_bytes())
        wait_available(kubectl, kubeconfig, timeout=timeout)
    except BaseException:
        process.stop()
        raise
    return HistoryApi(process, port, kubectl, kubeconfig, log)


def register(kubectl: Path, kubeconfig: Path, port: int, ca_pem: bytes) -> None:
    documents = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": GROUP,
                "version": VERSION,
                "service": {"namespace": NAMESPACE, "name": SERVICE, "port": port},
                "caBundle": base64.b64encode(ca_pem).decode(),
                "groupPriorityMinimum": 1000,
                "versionPriority": 15,
            },
        },
    ]
    path = Path(kubeconfig).parent / "history-apiservice.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    devstack.run_kubectl(
        kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(path)
    )


def wait_available(kubectl: Path, kubeconfig: Path, *, timeout: float) -> None:
    """Until the APIService's ``Available`` condition is True (the API server reached the
    server's discovery with its front-proxy certificate); a timeout names the last message."""
    deadline = time.monotonic() + timeout
    message = "no status yet"
    while time.monotonic() < deadline:
        found = json.loads(
            devstack.run_kubectl(kubectl, kubeconfig, "get", "apiservice", APISERVICE, "-o", "json")
        )
        for condition in (found.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Available":
                if condition.get("status") == "True":
                    return
                message = f"{condition.get('reason')}: {condition.get('message')}"
        time.sleep(0.5)
    raise TimeoutError(f"APIService {APISERVICE} not Available after {timeout:g}s: {message}")
