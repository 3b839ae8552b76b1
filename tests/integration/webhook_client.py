"""The API server's identity towards Ferry's webhooks, and a client to talk to them directly.

The local control plane presents a client certificate to admission webhooks (see
``ferry.devenv.controlplane``). :func:`trust_only_the_api_server` makes sure the session's
operator requires it, as a hardened installation does; :class:`WebhookClient` posts
AdmissionReviews straight to the webhook port, with or without a client certificate, the way a
pod in the cluster could; :func:`validating_webhook_off` takes the validating webhook away for a
block (stopping the operator does not: its configurations stay, failing closed).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.devenv.controlplane import WEBHOOK_CLIENT_CA
from ferry.domain import kinds
from ferry.settings.options import options
from ferry.webhooks.configurations import CONFIGURATION_NAME, VALIDATE_ENTRY
from tests.integration.conftest import Operator
from tests.support import Kube, entry, eventually

#: The environment variable of ``webhooks.client_ca_file`` (read off the settings, not spelled).
CLIENT_CA_ENV = next(o.env for o in options() if o.path == "webhooks.client_ca_file")


def api_server_pki(kube: Kube) -> Path | None:
    """The local control plane's ``pki`` directory, when the API server under test is one that
    presents a webhook client certificate (not ``FERRY_TEST_KUBECONFIG`` or kind)."""
    pki = kube.kubeconfig.parent / "pki"
    return pki if (pki / WEBHOOK_CLIENT_CA).exists() else None


def trust_only_the_api_server(kube: Kube, operator: Operator) -> Path | None:
    """Run the session's operator requiring the API server's client certificate (restarted once
    if it was started without); returns the control plane's ``pki``, or ``None`` if the API
    server under test has no such certificate."""
    pki = api_server_pki(kube)
    if pki is None:
        return None
    wanted = str(pki / WEBHOOK_CLIENT_CA)
    if operator.env.get(CLIENT_CA_ENV) != wanted:
        operator.stop()
        operator.env[CLIENT_CA_ENV] = wanted
        operator.start()
    return pki


@contextlib.contextmanager
def validating_webhook_off(kube: Kube) -> Iterator[None]:
    """Without Ferry's validating webhook for the block (as if it had never been installed), then
    with exactly the configuration there was, in force again (a probe is refused by it).

    Stopping the operator does not do this: its configurations stay registered and, with
    ``failurePolicy: Fail``, writes of Ferry's kinds are refused while it is stopped.
    """
    saved = kube.get_json("validatingwebhookconfiguration", CONFIGURATION_NAME)
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
        saved["metadata"].pop(key, None)
    kube.kubectl("delete", "validatingwebhookconfiguration", CONFIGURATION_NAME)
    try:
        yield
    finally:
        kube.kubectl("create", "-f", "-", input=json.dumps(saved))
        probe = entry("probe", "default", {"schemaRef": {"name": "no-such-schema"}, "data": {}})

        def effective() -> bool:
            result = kube.kubectl(
                "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
            )
            return VALIDATE_ENTRY.name in result.stderr

        eventually(effective, what="the validating webhook back in force")


def review(
    kind: kinds.Kind,
    namespace: str,
    obj: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    user: str = "mallory",
) -> dict[str, Any]:
    """An AdmissionReview as the API server would send it (nothing in it is checked by anyone)."""
    gvk = {"group": kinds.GROUP, "version": kinds.VERSION}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {**gvk, "kind": kind.kind},
            "resource": {**gvk, "resource": kind.plural},
            "requestKind": {**gvk, "kind": kind.kind},
            "requestResource": {**gvk, "resource": kind.plural},
            "namespace": namespace,
            "name": obj["metadata"]["name"],
            "operation": "UPDATE" if old is not None else "CREATE",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
            "options": {},
        },
    }


@dataclass(frozen=True)
class WebhookClient:
    """HTTPS to the operator's webhook port, verifying its serving certificate; presenting
    ``certificate`` (a ``(cert, key)`` pair) when given."""

    port: int
    server_ca: Path
    certificate: tuple[Path, Path] | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.server_ca))
        if self.certificate is not None:
            context.load_cert_chain(*map(str, self.certificate))
        return context

    def handshake(self, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> None:
        """Complete a TLS handshake, or raise. Up to TLS 1.2 the client learns in the handshake
        itself whether the server accepted its certificate (TLS 1.3 tells it only afterwards)."""
        context = self.context()
        context.maximum_version = maximum
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            pass

    def exchange(self, request: bytes) -> bytes:
        """Send ``request`` over a fresh TLS connection; what comes back (``b""``: nothing, the
        connection was closed or reset)."""
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
                self.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(request)
                return tls.recv(65536)
        except (ssl.SSLError, ConnectionError):
            return b""

    def post(
        self, path: str, body: bytes | Iterable[bytes], headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """POST ``body``; an iterable goes chunked (http.client sends no length for it)."""
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context(), timeout=30
        )
        try:
            connection.request("POST", path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def post_review(self, path: str, admission_review: dict[str, Any]) -> dict[str, Any]:
        status, body = self.post(
            path, json.dumps(admission_review).encode(), {"Content-Type": "application/json"}
        )
        assert status == 200, (status, body[:500])
        answer: dict[str, Any] = json.loads(body)["response"]
        return answer
