"""Ferry's webhooks trust only the API server: what a pod that can reach the webhook port gets.

The local control plane presents a client certificate to admission webhooks (an
AdmissionConfiguration, as a hardened cluster does) and the operator requires it
(``--webhook-client-ca-file``). A forged AdmissionReview without that certificate is refused in the
TLS handshake, before Ferry reads a byte; with it, a call still has no side effects, quotes no
other object's data and reads a bounded body. Configurations outlive a clean stop (fail closed).
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferry.domain import kinds
from ferry.webhooks.configurations import VALIDATE_ENTRY, VALIDATE_SCHEMA
from ferry.webhooks.server import MAX_BODY_BYTES
from tests.integration.conftest import Operator
from tests.integration.webhook_client import WebhookClient, review, trust_only_the_api_server
from tests.support import PAYMENTS, Kube, entry, eventually, schema

pytestmark = pytest.mark.integration

SECRET = "s3cret-db-host.internal"
STRICTER = {**PAYMENTS, "properties": {"db": {"properties": {"host": {"type": "integer"}}}}}


@pytest.fixture(scope="module")
def pki(kube: Kube, ferry_operator: Operator) -> Path:
    found = trust_only_the_api_server(kube, ferry_operator)
    if found is None:
        pytest.skip("the API server under test presents no webhook client certificate")
    return found


@pytest.fixture
def hardened(pki: Path, operator: Operator) -> Operator:
    return operator


def client(operator: Operator, certificate: tuple[Path, Path] | None = None) -> WebhookClient:
    server_ca = operator.workdir / "webhook" / "generated-ca.crt"
    return WebhookClient(operator.webhook_port, server_ca, certificate)


def answered(operator: Operator, webhook: str) -> float:
    """How many requests the webhook has answered (the operator's own histogram)."""
    with urllib.request.urlopen(f"{operator.api_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ferry_admission_duration_seconds_count"
        and sample.labels.get("webhook") == webhook
    )


def audit_rows(database_url: str, namespace: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT action, username FROM audit_log WHERE namespace=%s ORDER BY id", (namespace,)
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


@pytest.fixture
def tenant(kube: Kube, hardened: Operator) -> Iterator[str]:
    """A namespace with a schema and an entry holding a value no other tenant should learn."""
    ns = kube.namespace("trust")
    kube.apply(
        schema("payments", ns, PAYMENTS),
        entry("api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"host": SECRET}}}),
    )
    eventually(
        lambda: kube.get_json("configentry", "api", "-n", ns).get("status", {}).get("revision"),
        what="the entry recorded",
    )
    yield ns


def forged_schema_update(ns: str) -> dict[str, object]:
    """A ConfigSchema update that would break entry "api": the compatibility check runs on it."""
    old = schema("payments", ns, PAYMENTS)
    new = schema("payments", ns, STRICTER)
    return review(kinds.CONFIG_SCHEMA, ns, new, old=old)


def http_request(body: bytes) -> bytes:
    return (
        f"POST /{VALIDATE_SCHEMA.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_a_forged_review_without_the_api_servers_certificate_is_refused_at_tls(
    hardened: Operator, tenant: str, pki: Path, database_url: str
) -> None:
    request = http_request(json.dumps(forged_schema_update(tenant)).encode())
    anonymous = client(hardened)
    # Any cluster user's certificate (here the admin's, system:masters) is not the API server's.
    user = client(hardened, (pki / "admin.crt", pki / "admin.key"))
    api_server = client(hardened, (pki / "webhook-client.crt", pki / "webhook-client.key"))
    before = answered(hardened, VALIDATE_SCHEMA.path)

    for caller in (anonymous, user):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            caller.handshake()  # TLS 1.2: refused in the handshake itself
        assert caller.exchange(request) == b""  # TLS 1.3: no answer either
    api_server.handshake()

    assert answered(hardened, VALIDATE_SCHEMA.path) == before  # never reached Ferry's handlers
    assert api_server.exchange(request).startswith(b"HTTP/1.1 200 OK")
    assert answered(hardened, VALIDATE_SCHEMA.path) == before + 1
    assert not any(user == "mallory" for _, user in audit_rows(database_url, tenant))


def test_with_the_api_servers_certificate_a_call_quotes_no_other_object_and_writes_nothing(
    hardened: Operator, tenant: str, pki: Path, database_url: str
) -> None:
    """What the refusal above protects, and why it matters even for authentic calls: the
    compatibility check names the entry it would break, never its data, and nothing is recorded
    from what the request claims (namespace, name, user)."""
    as_api_server = client(hardened, (pki / "webhook-client.crt", pki / "webhook-client.key"))
    before = audit_rows(database_url, tenant)

    answer = as_api_server.post_review(f"/{VALIDATE_SCHEMA.path}", forged_schema_update(tenant))

    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert (
        f'ConfigSchema {tenant}/payments is invalid: spec.schema: would make ConfigEntry "api"'
        in (message)
    )
    assert SECRET not in message and "s3cret" not in message
    assert audit_rows(database_url, tenant) == before


def test_bodies_over_the_limit_are_refused_with_413_announced_or_chunked(
    hardened: Operator, tenant: str, pki: Path
) -> None:
    as_api_server = client(hardened, (pki / "webhook-client.crt", pki / "webhook-client.key"))
    oversized = b"x" * (MAX_BODY_BYTES + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(oversized), 64 * 1024):
            yield oversized[start : start + 64 * 1024]

    announced = as_api_server.post(f"/{VALIDATE_ENTRY.path}", oversized)
    chunked = as_api_server.post(f"/{VALIDATE_ENTRY.path}", chunks())  # no length: chunked

    for status, body in (announced, chunked):
        assert status == 413, (status, body[:200])
        assert f"Maximum request body size {MAX_BODY_BYTES} exceeded" in body.decode()
    # Still serving, and an ordinary review is still answered.
    valid = entry("ok", tenant, {"schemaRef": {"name": "payments"}, "data": {"db": {"host": "h"}}})
    answer = as_api_server.post_review(
        f"/{VALIDATE_ENTRY.path}", review(kinds.CONFIG_ENTRY, tenant, valid)
    )
    assert answer["allowed"] is True
    assert hardened.process is not None and hardened.process.alive()


def test_writes_through_the_api_server_are_checked_with_its_certificate(
    kube: Kube, hardened: Operator, tenant: str
) -> None:
    refused = kube.apply(
        entry("bad", tenant, {"schemaRef": {"name": "payments"}, "data": {"db": {"host": 7}}}),
        check=False,
    )

    assert (
        f'admission webhook "{VALIDATE_ENTRY.name}" denied the request: ConfigEntry {tenant}/bad '
        "is invalid: spec.data.db.host: 7 is not of type 'string'"
    ) in refused.stderr


def test_configurations_stay_registered_across_a_clean_stop(
    kube: Kube, hardened: Operator, tenant: str
) -> None:
    """Deleting them on stop would open a window in which writes are stored unchecked and
    unstamped; instead a stopped operator fails closed, and a started one updates them."""
    probe = entry("while-stopped", tenant, {"data": {"a": 1}})

    hardened.stop()
    try:
        validating = kube.kubectl("get", "validatingwebhookconfiguration", "ferry", check=False)
        mutating = kube.kubectl("get", "mutatingwebhookconfiguration", "ferry", check=False)
        refused = kube.apply(probe, check=False)
    finally:
        hardened.start()

    assert validating.returncode == 0 and mutating.returncode == 0
    assert refused.returncode != 0
    assert "failed calling webhook" in refused.stderr, refused.stderr
    assert kube.kubectl("get", "configentry", "while-stopped", "-n", tenant, check=False).returncode
    kube.apply(probe)
    stamped = kube.get_json("configentry", "while-stopped", "-n", tenant)["metadata"]
    assert "ferry.dev/changed-by" in stamped["annotations"]
