"""AdmissionThread (ferry.webhooks.thread): reviews are answered on a thread and loop of their
own, the client config reaches the loop that registers it, and a server that cannot serve stops
the operator instead of leaving the API server without webhooks. Real TLS on loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from ferry.devenv.process import free_port
from ferry.tls import serving_certificate
from ferry.webhooks.configurations import VALIDATE_FLAG
from ferry.webhooks.server import WebhookServer
from ferry.webhooks.thread import AdmissionThread
from tests.unit.test_webhook_server import review


class Answers:
    """Stands in for ``Admission``: allows everything, notes the thread it answered on."""

    pool: Any = None
    client: Any = None

    def __init__(self) -> None:
        self.threads: list[int] = []

    async def __call__(self, request: Any, **_: Any) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        uid = request["request"]["uid"]
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": True}}  # fmt: skip


class NoClient:
    async def close(self) -> None:
        return None


def post(port: int, ca: Path, body: bytes) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", f"/{VALIDATE_FLAG.path}", body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def start(tmp_path: Path, port: int, failed: threading.Event) -> tuple[AdmissionThread, Answers]:
    certificate = serving_certificate(tmp_path, "127.0.0.1")
    server = WebhookServer(host="127.0.0.1", port=port, certificate=certificate)
    answers = Answers()
    thread = AdmissionThread(
        server,
        answers,  # type: ignore[arg-type]
        NoClient,  # type: ignore[arg-type]
        workers=1,
        timeout_seconds=1.0,
        on_failure=failed.set,
    )
    thread.start()
    return thread, answers


async def test_reviews_are_answered_on_the_admission_thread(tmp_path: Path) -> None:
    failed = threading.Event()
    thread, answers = start(tmp_path, free_port(), failed)
    try:
        config = await asyncio.wait_for(anext(thread.server.client_configs()), timeout=10)
        assert config["url"] == f"https://127.0.0.1:{thread.server.port}"
        body = json.dumps(review(VALIDATE_FLAG.kind)).encode()
        status, answer = await asyncio.to_thread(
            post, thread.server.port, thread.server.certificate.ca, body
        )
    finally:
        await thread.stop()

    assert status == 200 and answer["response"] == {"uid": "u-1", "allowed": True}
    assert answers.threads and threading.get_ident() not in answers.threads
    assert not failed.is_set()  # stopped, not failed


async def test_a_server_that_cannot_listen_stops_the_operator(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        failed = threading.Event()
        thread, _ = start(tmp_path, taken.getsockname()[1], failed)
        try:
            assert await asyncio.to_thread(failed.wait, 10)
        finally:
            await thread.stop()
