"""The webhook server on its own, over real TLS on loopback: whom it lets in, how much it reads,
and what reaches Kopf's dispatch (here a recording stand-in for Kopf's ``WebhookFn``)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ferry.devenv.process import free_port
from ferry.domain import kinds
from ferry.tls import CertificateAuthority, serving_certificate
from ferry.webhooks.configurations import VALIDATE_ENTRY, VALIDATE_FLAG
from ferry.webhooks.server import MAX_BODY_BYTES, WebhookServer

CHECK_FAILED = {
    "kind": "ConfigEntry",
    "operation": "CREATE",
    "result": "denied",
    "reason": "CheckFailed",
}


@dataclass
class Recorder:
    """Answers every review with "allowed" and remembers what reached it."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: Exception | None = None  # raised instead of answering

    async def __call__(self, request: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append({"request": request, **kwargs})
        if self.fail is not None:
            raise self.fail
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": request["request"]["uid"], "allowed": True},
        }


@dataclass
class Running:
    server: WebhookServer
    recorder: Recorder
    ca: Path
    api_server: tuple[Path, Path]  # the client identity the server trusts
    stranger: tuple[Path, Path]  # a client certificate from another CA

    def context(self, identity: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if identity is not None:
            context.load_cert_chain(*map(str, identity))
        return context

    def post(
        self,
        path: str,
        body: Any,
        identity: tuple[Path, Path] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.server.port, context=self.context(identity), timeout=10
        )
        try:
            connection.request("POST", path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def review(kind: kinds.Kind = kinds.CONFIG_ENTRY, **overrides: Any) -> dict[str, Any]:
    gvk = {"group": kinds.GROUP, "version": kinds.VERSION}
    request = {
        "uid": "u-1",
        "kind": {**gvk, "kind": kind.kind},
        "resource": {**gvk, "resource": kind.plural},
        "name": "e",
        "namespace": "ns",
        "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "object": {"metadata": {"name": "e", "namespace": "ns"}, "spec": {}},
    }
    request.update(overrides)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def identity(tmp: Path, name: str, authority: CertificateAuthority) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    authority.issue(name, client=True).write(cert, key)
    return cert, key


async def serve(tmp_path: Path, *, client_ca: bool) -> AsyncIterator[Running]:
    trusted = CertificateAuthority.create("api-server-client-ca")
    (tmp_path / "client-ca.crt").write_bytes(trusted.cert_pem)
    certificate = serving_certificate(tmp_path / "serving", "127.0.0.1")
    server = WebhookServer(
        host="127.0.0.1",
        port=free_port(),
        certificate=certificate,
        client_ca=tmp_path / "client-ca.crt" if client_ca else None,
    )
    recorder = Recorder()
    configs = server(recorder)  # type: ignore[arg-type]
    first = await asyncio.wait_for(anext(configs), timeout=10)
    assert first["url"] == f"https://127.0.0.1:{server.port}"
    try:
        yield Running(
            server,
            recorder,
            certificate.ca,
            identity(tmp_path, "kube-apiserver", trusted),
            identity(tmp_path, "someone", CertificateAuthority.create("another-ca")),
        )
    finally:
        await configs.aclose()


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[Running]:
    async for running in serve(tmp_path, client_ca=True):
        yield running


@pytest.fixture
async def open_server(tmp_path: Path) -> AsyncIterator[Running]:
    async for running in serve(tmp_path, client_ca=False):
        yield running


def handshake(running: Running, identity: tuple[Path, Path] | None) -> None:
    """A TLS 1.2 handshake (1.3 would report the server's verdict only after it), or raise."""
    context = running.context(identity)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", running.server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


async def test_with_a_client_ca_only_certificates_it_signed_get_through(mtls: Running) -> None:
    body = json.dumps(review()).encode()

    for stranger in (None, mtls.stranger):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(handshake, mtls, stranger)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            await asyncio.to_thread(mtls.post, f"/{VALIDATE_ENTRY.path}", body, stranger)
    await asyncio.to_thread(handshake, mtls, mtls.api_server)
    status, answer = await asyncio.to_thread(
        mtls.post, f"/{VALIDATE_ENTRY.path}", body, mtls.api_server
    )

    assert status == 200 and json.loads(answer)["response"]["allowed"] is True
    assert len(mtls.recorder.calls) == 1  # only the trusted caller reached dispatch
    assert mtls.recorder.calls[0]["webhook"] == VALIDATE_ENTRY.path
    assert mtls.recorder.calls[0]["sslpeer"]["subject"] == ((("commonName", "kube-apiserver"),),)


async def test_without_a_client_ca_no_certificate_is_asked_for(open_server: Running) -> None:
    status, _ = await asyncio.to_thread(
        open_server.post, f"/{VALIDATE_ENTRY.path}", json.dumps(review()).encode()
    )

    assert status == 200


async def test_bodies_over_the_limit_get_413_announced_or_chunked(open_server: Running) -> None:
    oversized = b" " * (MAX_BODY_BYTES + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(oversized), 256 * 1024):
            yield oversized[start : start + 256 * 1024]

    path = f"/{VALIDATE_ENTRY.path}"
    announced = await asyncio.to_thread(open_server.post, path, oversized)
    # An iterable body without a length: http.client sends it chunked.
    chunked = await asyncio.to_thread(open_server.post, path, chunks())
    # A legal body just under the limit is read whole (JSON may carry trailing whitespace).
    padded = json.dumps(review()).encode()
    padded += b" " * (MAX_BODY_BYTES - len(padded))
    at_limit = await asyncio.to_thread(open_server.post, path, padded)

    assert announced[0] == chunked[0] == 413
    assert f"Maximum request body size {MAX_BODY_BYTES} exceeded" in chunked[1].decode()
    assert at_limit[0] == 200
    assert len(open_server.recorder.calls) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"kind": "AdmissionReview"}).encode(),
        json.dumps(review(kinds.FEATURE_FLAG)).encode(),  # a flag sent to the entry path
        json.dumps(review(userInfo=None)).encode(),
        json.dumps(review(object=None)).encode(),
    ],
    ids=["not-json", "no-request", "wrong-resource", "no-user", "no-object"],
)
async def test_what_is_not_a_review_for_the_path_never_reaches_dispatch(
    open_server: Running, body: bytes
) -> None:
    status, _ = await asyncio.to_thread(open_server.post, f"/{VALIDATE_ENTRY.path}", body)

    assert status == 400
    assert open_server.recorder.calls == []


async def test_unknown_paths_are_not_served(open_server: Running) -> None:
    status, _ = await asyncio.to_thread(
        open_server.post, "/validate-configmap", json.dumps(review()).encode()
    )
    assert status == 404
    assert open_server.recorder.calls == []


async def test_json_too_deep_to_decode_is_denied_naming_the_object(open_server: Running) -> None:
    depth = 100_000
    # As the API server writes it: the request's name and namespace come before the object.
    flag = review(kinds.FEATURE_FLAG, name="deep", namespace="ns")
    text = json.dumps(flag).replace('"spec": {}', '"spec": ' + '{"a":' * depth + "1" + "}" * depth)

    status, answer = await asyncio.to_thread(
        open_server.post, f"/{VALIDATE_FLAG.path}", text.encode()
    )

    response = json.loads(answer)["response"]
    assert status == 200 and response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"].startswith(
        "FeatureFlag ns/deep is invalid: spec: is nested too deeply to be checked"
    )
    assert open_server.recorder.calls == []


async def test_renewed_certificate_files_are_served_and_announced(tmp_path: Path) -> None:
    certificate = serving_certificate(tmp_path, "127.0.0.1")
    server = WebhookServer(
        host="127.0.0.1", port=free_port(), certificate=certificate, file_check_seconds=0.05
    )
    configs = server(Recorder())  # type: ignore[arg-type]
    try:
        first = await asyncio.wait_for(anext(configs), timeout=10)
        renewed = CertificateAuthority.create("renewed-ca")
        certificate.ca.write_bytes(renewed.cert_pem)
        renewed.issue("127.0.0.1", hosts=("127.0.0.1",)).write(certificate.cert, certificate.key)
        second = await asyncio.wait_for(anext(configs), timeout=10)

        served = await asyncio.to_thread(
            ssl.get_server_certificate, ("127.0.0.1", server.port), timeout=5
        )
    finally:
        await configs.aclose()

    assert first["caBundle"] != second["caBundle"]
    assert served.strip() == certificate.cert.read_text().strip()


async def test_a_check_that_fails_is_a_denial_naming_the_object(open_server: Running) -> None:
    """With ``failurePolicy: Fail`` an error refuses the write too, but kubectl would only say
    "failed calling webhook": the answer is a denial that names the object and the cause."""
    open_server.recorder.fail = KeyError("boom")
    before = REGISTRY.get_sample_value("ferry_admission_requests_total", CHECK_FAILED) or 0.0
    status, answer = await asyncio.to_thread(
        open_server.post, f"/{VALIDATE_ENTRY.path}", json.dumps(review()).encode()
    )

    response = json.loads(answer)["response"]
    assert status == 200 and response["allowed"] is False
    assert response["status"] == {
        "code": 403,
        "reason": "Forbidden",
        "message": "ConfigEntry ns/e is invalid: spec: could not be checked: 'boom'",
    }
    after = REGISTRY.get_sample_value("ferry_admission_requests_total", CHECK_FAILED)
    assert after == before + 1
