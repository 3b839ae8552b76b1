"""etcd + kube-apiserver as local processes, the way controller-runtime's envtest runs them.

No controller-manager, scheduler or kubelet runs: objects are stored and watched, webhooks are
called, but pods never start and namespaces are never finalized. Tests check what Ferry writes.

As a hardened cluster would, the API server presents a client certificate to admission webhooks
(an ``AdmissionConfiguration`` whose ``kubeConfigFile`` names it), issued by a CA of its own:
:attr:`ControlPlane.webhook_client_ca` is what Ferry's webhook server is told to require
(``--webhook-client-ca-file``). That CA signs nothing else, so no user's or component's
certificate passes for the API server's.
"""

from __future__ import annotations

import os
import shutil
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from ferry.devenv.process import (
    Process,
    build_cached,
    free_port,
    spawn,
    wait_until,
)
from ferry.tls import CertificateAuthority, rsa_private_key_pem

BINARIES_SCRIPT = Path(__file__).with_name("control-plane-binaries.sh")


def ensure_binaries(timeout: float = 3000) -> Path:
    """The directory holding kube-apiserver, etcd and kubectl, building them once if needed.

    ``FERRY_K8S_BIN_DIR`` points at ready-made binaries and skips the build.
    """
    preset = os.environ.get("FERRY_K8S_BIN_DIR")
    if preset:
        return Path(preset)
    return build_cached(BINARIES_SCRIPT, "the control-plane binaries", timeout)


#: Under ``<directory>/pki``: the CA that signs the API server's webhook client certificate.
WEBHOOK_CLIENT_CA = "webhook-client-ca.crt"
#: Under ``<directory>/pki``: the CA of the front proxy's client certificate (kubeadm's name).
FRONT_PROXY_CA = "front-proxy-ca.crt"
#: The common name of the front proxy's client certificate, as kubeadm issues it.
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass
class ControlPlane:
    directory: Path
    port: int
    kubeconfig: Path
    bin_dir: Path
    processes: list[Process]

    @property
    def webhook_client_ca(self) -> Path:
        """The CA a webhook server requires the API server's client certificate to chain to."""
        return self.directory / "pki" / WEBHOOK_CLIENT_CA

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def start_control_plane(directory: Path, bin_dir: Path, *, timeout: float = 120) -> ControlPlane:
    """Start etcd and kube-apiserver on free loopback ports; return once ``/readyz`` answers ok."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = directory / "pki"
    pki.mkdir(exist_ok=True)
    ca = CertificateAuthority.create("ferry-dev-ca")
    ca.key_pair().write(pki / "ca.crt", pki / "ca.key")
    ca.issue("kube-apiserver", hosts=("127.0.0.1", "localhost")).write(
        pki / "apiserver.crt", pki / "apiserver.key"
    )
    admin = ca.issue("ferry-admin", organizations=("system:masters",), client=True)
    admin.write(pki / "admin.crt", pki / "admin.key")
    sa_private, sa_public = rsa_private_key_pem()
    (pki / "sa.key").write_bytes(sa_private)
    (pki / "sa.pub").write_bytes(sa_public)
    admission_config = write_webhook_client_identity(directory, pki)
    front_proxy_flags = write_front_proxy_identity(pki)

    etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
    etcd_data = directory / "etcd"
    shutil.rmtree(etcd_data, ignore_errors=True)
    etcd = spawn(
        "etcd",
        [
            str(bin_dir / "etcd"),
            f"--data-dir={etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        directory / "etcd.log",
    )
    processes = [etcd]
    try:
        wait_until(
            etcd,
            lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"),
            timeout=timeout,
            what=f"/health on 127.0.0.1:{etcd_port}",
        )
        apiserver = spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                f"--admission-control-config-file={admission_config}",
                *front_proxy_flags,
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=0",
            ],
            directory / "kube-apiserver.log",
        )
        processes.append(apiserver)
        kubeconfig = directory / "kubeconfig"
        write_kubeconfig(kubeconfig, api_port, pki)
        context = client_ssl_context(pki)
        wait_until(
            apiserver,
            lambda: _http_ok(f"https://127.0.0.1:{api_port}/readyz", context),
            timeout=timeout,
            what=f"/readyz on 127.0.0.1:{api_port}",
        )
    except BaseException:
        for process in reversed(processes):
            process.stop()
        raise
    return ControlPlane(directory, api_port, kubeconfig, bin_dir, processes)


def write_webhook_client_identity(directory: Path, pki: Path) -> Path:
    """The API server's identity towards admission webhooks; returns the admission config file.

    A CA of its own (its key is not kept: it signs this one certificate), a client certificate,
    a kubeconfig presenting it to every webhook (user ``*``: on this loopback stack every webhook
    is Ferry's or a benchmark's), and the ``AdmissionConfiguration`` pointing both webhook
    admission plugins at that kubeconfig. Kubernetes docs: "Authenticate apiservers".
    """
    authority = CertificateAuthority.create("ferry-dev-webhook-client-ca")
    (pki / WEBHOOK_CLIENT_CA).write_bytes(authority.cert_pem)
    authority.issue("kube-apiserver-webhook-client", client=True).write(
        pki / "webhook-client.crt", pki / "webhook-client.key"
    )
    kubeconfig = directory / "webhook-client.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "users": [
                    {
                        "name": "*",
                        "user": {
                            "client-certificate": str(pki / "webhook-client.crt"),
                            "client-key": str(pki / "webhook-client.key"),
                        },
                    }
                ],
            },
            sort_keys=False,
        )
    )
    webhook_admission = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(kubeconfig),
    }
    path = directory / "admission-config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "AdmissionConfiguration",
                "plugins": [
                    {"name": plugin, "configuration": webhook_admission}
                    for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
                ],
            },
            sort_keys=False,
        )
    )
    return path


def write_front_proxy_identity(pki: Path) -> list[str]:
    """The front proxy of the aggregation layer, as kubeadm sets it up; returns the API server's
    flags for it.

    The API server presents ``front-proxy-client.crt`` to every extension API server it proxies
    to, with the caller's identity in the ``X-Remote-*`` headers; an extension server trusts
    those headers only from a certificate the front-proxy CA signed with an allowed name. The CA
    signs nothing else, and its key is not kept. Kubernetes docs: "Configure the Aggregation
    Layer".
    """
    authority = CertificateAuthority.create("ferry-dev-front-proxy-ca")
    (pki / FRONT_PROXY_CA).write_bytes(authority.cert_pem)
    authority.issue(FRONT_PROXY_CLIENT, client=True).write(
        pki / "front-proxy-client.crt", pki / "front-proxy-client.key"
    )
    return [
        f"--requestheader-client-ca-file={pki / FRONT_PROXY_CA}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
    ]


def client_ssl_context(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def write_kubeconfig(path: Path, port: int, pki: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "ferry-dev",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority": str(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": "ferry-admin",
                "user": {
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "ferry-dev",
                "context": {"cluster": "ferry-dev", "user": "ferry-admin", "namespace": "default"},
            }
        ],
        "current-context": "ferry-dev",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return bool(response.status == 200)
