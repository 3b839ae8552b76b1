"""`ferry webhooks` (ferry.handlers.admission.run) stops when a part it cannot serve without ends:
an index that is no longer kept would let admission decide on a stale picture, so the process
exits with the cause and is restarted, rather than going on answering. The informers never end
while all is well (they retry every failure of the API server themselves), so one that does is
played here by a stand-in. The rest is real: the API port, and the admission thread serving its
webhook port with a certificate mounted as cert-manager's would be (so registering writes
nothing). The admission thread's own failure is tested on a real process in test_ha."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from ferry.handlers import admission, watches
from ferry.settings import AdmissionSettings, ApiSettings, KubernetesSettings, WebhookSettings
from ferry.tls import CertificateAuthority

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class EndingInformer:
    """Lists, then ends as a bug would end it (with ``error``, or returning) once both ports
    serve: the process must have been fully up when its index stops."""

    kind = "ConfigSchema"

    def __init__(self, error: Exception | None, ports: tuple[int, int]) -> None:
        self.error = error
        self.ports = ports
        self.synced = asyncio.Event()

    async def run(self) -> None:
        self.synced.set()
        async with asyncio.timeout(15):
            while not all(is_open(port) for port in self.ports):
                await asyncio.sleep(0.05)
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (KeyError("metadata"), "metadata"),
        (None, "ferry-follow-ConfigSchema ended"),
    ],
)
async def test_the_webhooks_process_stops_when_an_index_is_no_longer_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception | None, raised: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % free_port())  # nothing listens there; nothing calls it
    api_port, webhook_port = free_port(), free_port()
    mounted = tmp_path / "webhook"  # tls.crt, tls.key, ca.crt, as a cert-manager Secret
    mounted.mkdir()
    authority = CertificateAuthority.create("test-ca")
    (mounted / "ca.crt").write_bytes(authority.cert_pem)
    authority.issue("127.0.0.1", hosts=("127.0.0.1",)).write(
        mounted / "tls.crt", mounted / "tls.key"
    )
    settings = AdmissionSettings(
        kubernetes=KubernetesSettings(kubeconfig=str(kubeconfig)),
        api=ApiSettings(host="127.0.0.1", port=api_port),
        webhooks=WebhookSettings(port=webhook_port, cert_dir=mounted),
    )
    informer = EndingInformer(error, (api_port, webhook_port))
    monkeypatch.setattr(watches, "admission_informers", lambda *_, **__: [informer])
    with pytest.raises(Exception, match=raised):
        await asyncio.wait_for(admission.run(settings), timeout=20)
    assert not is_open(api_port) and not is_open(webhook_port)  # both closed as it stopped
