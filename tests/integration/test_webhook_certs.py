"""Webhook certificates kept by the operator without cert-manager (decision 0022), on a real API
server: two replicas with leader election behind a TCP balancer (what the webhook Service does),
both serving the certificate from one Secret, the leader renewing it and injecting the CA bundle.

Validities are seconds instead of days so that the serving certificate is renewed every ~10 s and
the CA every ~20 s. What a user would check: the serial presented on the webhook port changes
(TLS handshakes, as the API server makes them), the configurations' ``caBundle`` follows, and
``kubectl apply --dry-run=server`` of a FeatureFlag (both webhooks are called) keeps succeeding
before, during and after the rotations. Then a deleted Secret is made again, a ``caBundle``
changed by hand is repaired, and an annotated APIService gets the bundle too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from prometheus_client.parser import text_string_to_metric_families

from ferry.adapters.kube import make_client
from ferry.domain import labels
from ferry.reconcile.certificates import CertificateKeeper
from ferry.settings import WebhookSettings
from ferry.tls import CertificateAuthority
from ferry.webhooks.configurations import (
    CONFIGURATION_NAME,
    url_client_config,
    webhook_configurations,
)
from tests.integration.balancer import Balancer
from tests.integration.conftest import Operator
from tests.support import Kube, eventually, flag, get_or_none

pytestmark = pytest.mark.integration

NAMESPACE = "ferry-system"
SECRET = "ferry-webhook-tls"
KEY_SECRET = f"{SECRET}-ca"
KINDS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
VALID = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
INVALID = {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "missing"}
SETTINGS = {
    "FERRY_WEBHOOK_CERT_SECRET": f"{NAMESPACE}/{SECRET}",
    "FERRY_WEBHOOK_CERT_VALIDITY_SECONDS": "30",
    "FERRY_WEBHOOK_CERT_RENEW_BEFORE_SECONDS": "20",
    "FERRY_WEBHOOK_CA_VALIDITY_SECONDS": "60",
    "FERRY_WEBHOOK_CA_RENEW_BEFORE_SECONDS": "40",
    "FERRY_WEBHOOK_CERT_CHECK_SECONDS": "1",
    "FERRY_LEADER_LEASE_NAMESPACE": NAMESPACE,
    "FERRY_LEADER_LEASE_NAME_PREFIX": "certs",
}


@dataclass
class Stack:
    admin: Kube
    balancer: Balancer
    leader: Operator
    follower: Operator
    namespace: str
    replicas: list[Operator] = field(default_factory=list)

    def secret(self, name: str = SECRET) -> dict[str, bytes]:
        found = get_or_none(self.admin, "secret", name, "-n", NAMESPACE)
        data = (found or {}).get("data") or {}
        return {key: base64.b64decode(value) for key, value in data.items()}

    def key(self) -> bytes | None:
        """The CA's key, in its own Secret beside the serving one."""
        return self.secret(KEY_SECRET).get("ca.key")

    def bundles(self) -> set[str]:
        """Every caBundle in Ferry's two webhook configurations."""
        return {
            hook.get("clientConfig", {}).get("caBundle", "")
            for kind in KINDS
            for hook in self.admin.get_json(kind, CONFIGURATION_NAME)["webhooks"]
        }

    def dry_run(self, spec: dict[str, Any]) -> tuple[int, str]:
        document = yaml.safe_dump(flag("probe", self.namespace, spec))
        result = self.admin.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=document, check=False, timeout=30
        )
        return result.returncode, result.stderr


def presented(port: int) -> x509.Certificate:
    """The certificate the webhook port presents in a TLS handshake (not verified here: the
    test compares it with the Secret and the bundle itself)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def issuer_in(cert: x509.Certificate, bundle_b64: str) -> bytes | None:
    """The fingerprint of the CA of the bundle that signed ``cert`` (None: none of them). Every
    CA the operator makes has the same name, so the name cannot tell them apart."""
    for ca in x509.load_pem_x509_certificates(base64.b64decode(bundle_b64)):
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:
            continue
        return ca.fingerprint(hashes.SHA256())
    return None


def samples(operator: Operator) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"{operator.api_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


@pytest.fixture(scope="module")
def stack(
    own_cluster: Kube,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    admin = own_cluster
    workdir = tmp_path_factory.mktemp("webhook-certs")
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    balancer = Balancer()
    balancer.start()
    replicas: list[Operator] = []
    try:
        # The configurations as an installation makes them: no caBundle, the annotation naming
        # the Secret. Until the operator injects the bundle, every write of a flag is refused.
        inject = {labels.INJECT_CA_FROM: f"{NAMESPACE}/{SECRET}"}
        base = f"https://127.0.0.1:{balancer.port}"
        admin.apply(*webhook_configurations(url_client_config(base, None), inject))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FERRY_")},
            "KUBECONFIG": str(admin.kubeconfig),
            "FERRY_DATABASE_URL": database_url,
            "FERRY_REDIS_URL": redis_url,
            **SETTINGS,
        }
        for identity in ("a", "b"):
            replica_dir = workdir / identity
            replica_dir.mkdir()
            operator = Operator(
                env={**env, "FERRY_LEADER_IDENTITY": identity},
                log=replica_dir / "operator.log",
                workdir=replica_dir,
            )
            balancer.backends.append(operator.webhook_port)
            replicas.append(operator)
            operator.start(timeout=120)  # /readyz: serving the certificate from the Secret
        leader = eventually(
            lambda: next(
                (
                    r
                    for r in replicas
                    if (get_or_none(admin, "lease", "certs-shard-0-of-1", "-n", NAMESPACE) or {})
                    .get("spec", {})
                    .get("holderIdentity")
                    == r.env["FERRY_LEADER_IDENTITY"]
                ),
                None,
            ),
            timeout=60,
            what="a replica to hold the Lease",
        )
        follower = next(r for r in replicas if r is not leader)
        namespace = admin.namespace("certs")
        yield Stack(admin, balancer, leader, follower, namespace, replicas)
    finally:
        for operator in replicas:
            operator.stop()
        balancer.stop()


def test_the_secret_is_created_and_its_ca_injected_at_first_start(stack: Stack) -> None:
    secret = eventually(
        lambda: (s := stack.secret()) and {"ca.crt", "tls.crt", "tls.key"} <= set(s) and s,
        timeout=60,
        what="the operator to create the Secret",
    )
    # The CA's key is not in what the webhooks read, but in a Secret of its own, and signs the
    # CA the bundle starts with.
    assert "ca.key" not in secret
    key = eventually(stack.key, timeout=30, what="the CA's key in its Secret")
    assert CertificateAuthority.load(x509.load_pem_x509_certificate(secret["ca.crt"]), key)
    bundle = base64.b64encode(secret["ca.crt"]).decode()
    eventually(lambda: stack.bundles() == {bundle}, timeout=30, what="the CA bundle injected")
    # The webhooks answer, through the API server: a valid flag passes, an invalid one is
    # refused by Ferry's webhook (not by a TLS failure).
    eventually(lambda: stack.dry_run(VALID)[0] == 0, timeout=30, what="a dry run to pass")
    code, stderr = stack.dry_run(INVALID)
    assert code != 0 and "denied the request" in stderr and "spec.defaultVariant" in stderr


def test_rotation_keeps_admission_working(stack: Stack) -> None:
    """Serving certificate and CA rotate several times while dry runs go on without a failure."""
    failures: list[str] = []
    attempts = 0
    serials: set[int] = set()
    issuers: set[bytes] = set()
    bundles: set[str] = set()
    stop = threading.Event()

    def admit() -> None:
        nonlocal attempts
        while not stop.is_set():
            code, stderr = stack.dry_run(VALID)
            attempts += 1
            if code != 0:
                failures.append(stderr.strip())

    def watch() -> None:
        while not stop.is_set():
            for port in (stack.leader.webhook_port, stack.follower.webhook_port):
                cert = presented(port)
                serials.add(cert.serial_number)
                issuer = issuer_in(cert, next(iter(stack.bundles())))
                assert issuer is not None, "a presented certificate not signed by the caBundle"
                issuers.add(issuer)
            bundles.update(stack.bundles())
            time.sleep(0.3)

    admitting = threading.Thread(target=admit, daemon=True)
    watching_errors: list[BaseException] = []

    def watched() -> None:
        try:
            watch()
        except BaseException as error:  # reported below, with what was seen
            watching_errors.append(error)

    watching = threading.Thread(target=watched, daemon=True)
    admitting.start()
    watching.start()
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and not watching_errors:
            if len(serials) >= 5 and len(issuers) >= 2 and len(bundles) >= 3:
                break
            time.sleep(1)
    finally:
        stop.set()
        admitting.join(timeout=60)
        watching.join(timeout=60)
    assert not watching_errors, watching_errors
    seen = f"serials {len(serials)}, CAs {len(issuers)}, bundles {len(bundles)}"
    assert len(serials) >= 5 and len(issuers) >= 2 and len(bundles) >= 3, seen
    assert attempts >= 10, f"only {attempts} dry runs"
    assert not failures, f"{len(failures)} of {attempts} dry runs failed: {failures[:3]}"
    # Only the leader wrote; the other replica only followed.
    assert "new serving certificate" in stack.leader.log.read_text()
    assert "webhook certificates: new" not in stack.follower.log.read_text()
    # Both replicas counted what they answered, by kind, operation, result and reason.
    answered = [
        value
        for replica in stack.replicas
        for name, found, value in samples(replica)
        if name == "ferry_admission_requests_total"
        and found
        == {"kind": "FeatureFlag", "operation": "CREATE", "result": "allowed", "reason": "Allowed"}
    ]
    assert len(answered) == 2 and all(v > 0 for v in answered), answered
    code, stderr = stack.dry_run(INVALID)
    assert code != 0 and "spec.defaultVariant" in stderr, stderr
    denied = [
        value
        for replica in stack.replicas
        for name, found, value in samples(replica)
        if name == "ferry_admission_requests_total"
        and found.get("result") == "denied"
        and found.get("reason") == "FlagInvalid"
    ]
    assert sum(denied) >= 1, denied


def test_a_deleted_secret_is_made_again(stack: Stack) -> None:
    before = stack.secret()
    stack.admin.kubectl("delete", "secret", SECRET, "-n", NAMESPACE)
    after = eventually(
        lambda: (s := stack.secret()) and s.get("ca.crt") not in (None, before["ca.crt"]) and s,
        timeout=60,
        what="the Secret to be made again, with a new CA",
    )
    new_ca = x509.load_pem_x509_certificate(after["ca.crt"])
    eventually(
        lambda: (key := stack.key()) is not None and CertificateAuthority.load(new_ca, key),
        timeout=30,
        what="the new CA's key in its Secret",
    )
    bundle = base64.b64encode(after["ca.crt"]).decode()
    eventually(lambda: stack.bundles() == {bundle}, timeout=30, what="the new CA bundle injected")
    served = x509.load_pem_x509_certificate(after["tls.crt"]).serial_number
    for port in (stack.leader.webhook_port, stack.follower.webhook_port):
        eventually(
            lambda port=port: presented(port).serial_number == served,
            timeout=30,
            what="each replica to serve the new certificate",
        )
    eventually(lambda: stack.dry_run(VALID)[0] == 0, timeout=30, what="a dry run to pass")


async def test_a_ca_key_kept_in_the_serving_secret_is_moved_to_its_own(stack: Stack) -> None:
    """Secrets made before the key had its own (by the chart or the operator) are taken over:
    the same CA and serving certificate, the key moved out of what the webhooks pods read.
    One round of the leader's keeper, on a Secret of its own with certificates far from due (the
    stack's rotate every few seconds)."""
    namespace = stack.admin.namespace("legacy")
    ca = CertificateAuthority.create("legacy-ca", validity=dt.timedelta(days=3650))
    serving = ca.issue(
        "127.0.0.1", hosts=("127.0.0.1",), not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=80)
    )
    legacy = {
        "ca.crt": ca.cert_pem,
        "ca.key": ca.key_pair().key_pem,
        "tls.crt": serving.cert_pem,
        "tls.key": serving.key_pem,
    }
    stack.admin.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "legacy", "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in legacy.items()},
        }
    )
    settings = WebhookSettings(cert_secret=f"{namespace}/legacy", cert_hosts=("127.0.0.1",))
    client = make_client(str(stack.admin.kubeconfig))
    try:
        await CertificateKeeper(client, settings).check()
    finally:
        await client.close()

    def read(name: str) -> dict[str, bytes]:
        data = stack.admin.get_json("secret", name, "-n", namespace).get("data") or {}
        return {k: base64.b64decode(v) for k, v in data.items()}

    kept, key = read("legacy"), read("legacy-ca")
    assert kept == {k: v for k, v in legacy.items() if k != "ca.key"}  # nothing re-issued
    assert set(key) == {"ca.key"} and CertificateAuthority.load(ca.cert, key["ca.key"])


def test_a_ca_bundle_changed_by_hand_is_repaired(stack: Stack) -> None:
    stranger = base64.b64encode(CertificateAuthority.create("stranger").cert_pem).decode()
    stack.admin.kubectl(
        "patch",
        "validatingwebhookconfiguration",
        CONFIGURATION_NAME,
        "--type=json",
        "-p",
        json.dumps(
            [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": stranger}]
        ),
    )
    eventually(
        lambda: (
            stranger not in stack.bundles()
            and stack.bundles() == {base64.b64encode(stack.secret()["ca.crt"]).decode()}
        ),
        timeout=30,
        what="the caBundle to be repaired",
    )
    injections = [
        value
        for name, found, value in samples(stack.leader)
        if name == "ferry_ca_bundle_injections_total"
        and found == {"kind": "ValidatingWebhookConfiguration"}
    ]
    assert injections and injections[0] >= 2, injections  # the first injection and the repair


def apiservice(name: str, group: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": name, "annotations": {labels.INJECT_CA_FROM: secret}},
        "spec": {
            "group": group,
            "version": "v1alpha1",
            "service": {"name": "ferry-test-absent", "namespace": NAMESPACE, "port": 443},
            "groupPriorityMinimum": 1000,
            "versionPriority": 10,
        },
    }


def test_annotated_apiservices_get_the_ca_bundle_of_the_secret_they_name(stack: Stack) -> None:
    """The webhook's Secret, or another Secret of the namespace (as the history API's)."""
    other = CertificateAuthority.create("other-api-ca").cert_pem
    stack.admin.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "other-api-tls", "namespace": NAMESPACE},
            "data": {"ca.crt": base64.b64encode(other).decode()},
        }
    )
    ours, theirs = "v1alpha1.certs-test.ferry.dev", "v1alpha1.other-test.ferry.dev"
    try:
        stack.admin.apply(
            apiservice(ours, "certs-test.ferry.dev", f"{NAMESPACE}/{SECRET}"),
            apiservice(theirs, "other-test.ferry.dev", f"{NAMESPACE}/other-api-tls"),
        )

        def injected(name: str) -> str | None:
            found = get_or_none(stack.admin, "apiservice", name) or {}
            return found.get("spec", {}).get("caBundle")

        eventually(
            lambda: injected(ours) == base64.b64encode(stack.secret()["ca.crt"]).decode(),
            timeout=30,
            what="the caBundle of the APIService naming the webhook's Secret",
        )
        eventually(
            lambda: injected(theirs) == base64.b64encode(other).decode(),
            timeout=30,
            what="the caBundle of the APIService naming another Secret",
        )
    finally:
        stack.admin.kubectl(
            "delete", "apiservice", ours, theirs, "--ignore-not-found", "--wait=false"
        )
