"""`ferry serve` on the real stack: the operator writes, the server reads, callers authenticate
with service-account tokens minted by the local kube-apiserver (TokenRequest) and are authorised
by its RBAC. The server runs as its own service account, bound only to ``system:auth-delegator``
(create TokenReviews and SubjectAccessReviews), as in a cluster."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ferry.client import EventParser, FerryClient
from ferry.devenv.process import Process, free_port, spawn, wait_until
from tests.integration.conftest import Operator
from tests.support import PAYMENTS, Kube, entry, eventually, flag, schema

pytestmark = pytest.mark.integration

AUDIENCE = "ferry"


# ----------------------------------------------------------------------------- the server
@dataclass
class Serve:
    url: str
    process: Process
    kube: Kube

    def token(self, namespace: str, account: str, audience: str = AUDIENCE) -> str:
        return self.kube.kubectl(
            "create", "token", account, "-n", namespace, f"--audience={audience}", "--duration=1h"
        ).stdout.strip()

    def account(self, namespace: str, name: str, resources: list[str] | None = None) -> str:
        """A service account with ``get`` on ``resources`` (ferry.dev) in ``namespace``; its
        token for Ferry's audience."""
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
        ]
        if resources:
            objects += [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": f"{name}-read", "namespace": namespace},
                    "rules": [
                        {"apiGroups": ["ferry.dev"], "resources": resources, "verbs": ["get"]}
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": f"{name}-read", "namespace": namespace},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": f"{name}-read",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                },
            ]
        self.kube.apply(*objects)
        return self.token(namespace, name)

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                status, got = response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, dict(exc.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode()
        return status, got, parsed


def _kubeconfig_for(kube: Kube, token: str, path: Path) -> Path:
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    server = dict(cluster["cluster"])
    if "certificate-authority" in server:
        ca = Path(server.pop("certificate-authority"))
        if not ca.is_absolute():
            ca = kube.kubeconfig.parent / ca
        server["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": "ferry-serve", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "ferry-serve"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def start_serve(
    kube: Kube,
    database_url: str,
    redis_url: str,
    workdir: Path,
    port: int | None = None,
    options: tuple[str, ...] = (),
) -> tuple[Process, str]:
    suffix = uuid.uuid4().hex[:6]
    namespace = f"ferry-serve-{suffix}"
    kube.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "ferry-serve", "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{namespace}-auth-delegator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "ferry-serve", "namespace": namespace}],
        },
    )
    token = kube.kubectl(
        "create", "token", "ferry-serve", "-n", namespace, "--duration=2h"
    ).stdout.strip()
    kubeconfig = _kubeconfig_for(kube, token, workdir / f"serve-{suffix}.kubeconfig")
    port = port or free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "FERRY_DATABASE_URL": database_url,
        "FERRY_REDIS_URL": redis_url,
    }
    argv = [sys.executable, "-m", "ferry", "serve", "--serve-port", str(port)]
    argv += ["--serve-auth-cache-ttl-seconds", "2", "--serve-heartbeat-seconds", "1"]
    argv += ["--cache-timeout-seconds", "0.5", *options]
    process = spawn("ferry-serve", argv, workdir / f"serve-{suffix}.log", env=env)

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)

    wait_until(process, healthy, timeout=60, what="ferry serve's /readyz")
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def serve(
    kube: Kube,
    database_url: str,
    redis_url: str,
    ferry_operator: Operator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Serve]:
    workdir = tmp_path_factory.mktemp("serve")
    # Two flags get series of their own in ferry_flag_evaluations_total; the rest are "other".
    options = ("--serve-flag-metric-limit", "2")
    process, url = start_serve(kube, database_url, redis_url, workdir, options=options)
    try:
        yield Serve(url, process, kube)
    finally:
        process.stop()


@dataclass
class Tenant:
    namespace: str
    token: str  # get on configentries and featureflags in the namespace


@pytest.fixture
def tenant(serve: Serve, kube: Kube, operator: Operator) -> Tenant:
    namespace = kube.namespace("serve")
    kube.apply(schema("payments", namespace, PAYMENTS))
    token = serve.account(namespace, "app", ["configentries", "featureflags"])
    return Tenant(namespace, token)


def _ready_revision(kube: Kube, namespace: str, name: str, revision: int) -> None:
    def done() -> bool:
        obj = kube.get_json("configentry", name, "-n", namespace)
        status = obj.get("status") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )
        return ready and status.get("revision") == revision

    eventually(done, timeout=60, what=f"{namespace}/{name} Ready at revision {revision}")


def _write_entry(kube: Kube, namespace: str, name: str, pool: int) -> None:
    kube.apply(
        entry(
            name, namespace, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": pool}}}
        )
    )


# ----------------------------------------------------------------------------- configs
def test_read_after_write_then_304_while_unchanged(
    serve: Serve, kube: Kube, tenant: Tenant
) -> None:
    _write_entry(kube, tenant.namespace, "api", 10)
    _ready_revision(kube, tenant.namespace, "api", 1)
    status, headers, body = serve.request(
        "GET", f"/v1/configs/{tenant.namespace}/api", token=tenant.token
    )
    assert status == 200, body
    assert body["data"] == {"db": {"poolSize": 10}}
    assert body["revision"] == 1
    assert json.loads(body["rendered"]["config.json"]) == {"db": {"poolSize": 10}}
    live = kube.get_json("configentry", "api", "-n", tenant.namespace)
    assert body["hash"] == live["status"]["hash"]
    etag = headers["ETag"]
    assert body["hash"] in etag

    status, _, body = serve.request(
        "GET",
        f"/v1/configs/{tenant.namespace}/api",
        token=tenant.token,
        headers={"If-None-Match": etag},
    )
    assert status == 304 and body is None

    _write_entry(kube, tenant.namespace, "api", 11)
    _ready_revision(kube, tenant.namespace, "api", 2)
    status, headers, body = serve.request(
        "GET",
        f"/v1/configs/{tenant.namespace}/api",
        token=tenant.token,
        headers={"If-None-Match": etag},
    )
    assert status == 200 and body["revision"] == 2 and body["data"]["db"]["poolSize"] == 11
    assert headers["ETag"] != etag

    status, _, body = serve.request(
        "GET", f"/v1/configs/{tenant.namespace}/nope", token=tenant.token
    )
    assert status == 404 and body["kind"] == "Status" and "nope" in body["message"]


def test_no_token_bad_token_and_no_rbac_are_refused_saying_why(
    serve: Serve, kube: Kube, tenant: Tenant
) -> None:
    _write_entry(kube, tenant.namespace, "secret-ish", 5)
    _ready_revision(kube, tenant.namespace, "secret-ish", 1)
    path = f"/v1/configs/{tenant.namespace}/secret-ish"

    status, headers, body = serve.request("GET", path)
    assert status == 401 and body["reason"] == "Unauthorized"
    assert "no bearer token" in body["message"]
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")

    status, _, body = serve.request("GET", path, token="not-a-token")
    assert status == 401 and "not accepted" in body["message"]
    assert "not-a-token" not in json.dumps(body)

    # A real token, but for the API server's audience, not Ferry's: refused too.
    other_audience = serve.token(tenant.namespace, "app", audience="https://kubernetes.default.svc")
    status, _, body = serve.request("GET", path, token=other_audience)
    assert status == 401, body

    # A valid token of an account without RBAC, in the same namespace and in another one.
    bystander = serve.account(tenant.namespace, "bystander")
    status, _, body = serve.request("GET", path, token=bystander)
    assert status == 403 and body["reason"] == "Forbidden"
    assert f"system:serviceaccount:{tenant.namespace}:bystander" in body["message"]
    assert "configentries.ferry.dev" in body["message"] and tenant.namespace in body["message"]

    elsewhere = kube.namespace("serve-other")
    other_tenant = serve.account(elsewhere, "app", ["configentries", "featureflags"])
    status, _, body = serve.request("GET", path, token=other_tenant)
    assert status == 403, body
    # Refused the same way whether the entry exists or not: nothing is learned by probing.
    status, _, body = serve.request(
        "GET", f"/v1/configs/{tenant.namespace}/missing", token=other_tenant
    )
    assert status == 403, body

    # RBAC granted later takes effect once the cached "no" expires (2 s in these tests).
    serve.account(tenant.namespace, "bystander", ["configentries"])
    eventually(
        lambda: serve.request("GET", path, token=bystander)[0] == 200,
        timeout=20,
        what="the new RoleBinding to take effect",
    )


def test_redis_down_is_served_from_postgresql(
    serve: Serve, kube: Kube, tenant: Tenant, redis_server: Any
) -> None:
    _write_entry(kube, tenant.namespace, "resilient", 42)
    _ready_revision(kube, tenant.namespace, "resilient", 1)
    path = f"/v1/configs/{tenant.namespace}/resilient"
    status, headers, from_redis = serve.request("GET", path, token=tenant.token)
    assert status == 200 and headers["X-Ferry-Source"] == "redis"

    redis_server.pause()
    try:
        status, headers, from_postgres = serve.request("GET", path, token=tenant.token)
        assert status == 200, from_postgres
        assert headers["X-Ferry-Source"] == "postgres"
        assert from_postgres == from_redis
        status, _, _ = serve.request(
            "GET", f"/v1/configs/{tenant.namespace}/never", token=tenant.token
        )
        assert status == 404
    finally:
        redis_server.resume()
    # Redis came back empty (it is only a cache): still served, from PostgreSQL, until the
    # operator writes the key again.
    status, _, body = serve.request("GET", path, token=tenant.token)
    assert status == 200 and body == from_redis


def test_the_operators_own_port_serves_no_tenant_data(
    serve: Serve, kube: Kube, tenant: Tenant, operator: Operator
) -> None:
    """The operator's port (probes and metrics) used to answer configs and flag evaluations to
    anyone who reached it; the read path is `ferry serve`, which checks who asks."""
    ns = tenant.namespace
    _write_entry(kube, ns, "guarded", 3)
    _ready_revision(kube, ns, "guarded", 1)
    kube.apply(flag("checkout", ns, CHECKOUT))
    _flag_ready(kube, ns, "checkout")
    status, _, body = serve.request("GET", f"/v1/configs/{ns}/guarded", token=tenant.token)
    assert status == 200 and body["data"] == {"db": {"poolSize": 3}}

    for method, path in [
        ("GET", f"/v1/configs/{ns}/guarded"),
        ("GET", f"/v1/flags/{ns}/checkout/evaluate?targetingKey=user-1"),
        ("POST", "/ofrep/v1/evaluate/flags/checkout"),
        ("GET", f"/v1/watch?namespace={ns}"),
    ]:
        request = urllib.request.Request(operator.api_url + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 404, (path, refused.value.code)
        assert b"poolSize" not in refused.value.read()
    for path in ("/healthz", "/readyz", "/metrics"):
        with urllib.request.urlopen(operator.api_url + path, timeout=5) as response:
            assert response.status == 200, path


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_workers_share_the_port_and_stop_together(
    serve: Serve, kube: Kube, tenant: Tenant, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    _write_entry(kube, tenant.namespace, "shared", 8)
    _ready_revision(kube, tenant.namespace, "shared", 1)
    options = ("--serve-workers", "2")
    process, url = start_serve(kube, database_url, redis_url, tmp_path, options=options)
    try:
        workers = _children(process.pid)
        assert len(workers) == 2
        # Both listen on the one port (each logs its pid once serving).
        eventually(
            lambda: all(f"(pid {pid})" in process.log.read_text() for pid in workers),
            timeout=30,
            what="both workers serving",
        )
        several = Serve(url, process, kube)
        for _ in range(20):  # a new connection each: the kernel spreads them
            status, _, body = several.request(
                "GET", f"/v1/configs/{tenant.namespace}/shared", token=tenant.token
            )
            assert status == 200 and body["data"] == {"db": {"poolSize": 8}}

        # A worker that dies takes the command down (the pod restarts), not a silent half.
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        assert process.popen is not None
        assert process.popen.wait(timeout=30) == 1
        eventually(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
            timeout=30,
            what="the other worker to stop",
        )
        assert "exited" in process.log.read_text()
    finally:
        process.stop()


# ----------------------------------------------------------------------------- watch
class SSE:
    """A raw Server-Sent Events reader on its own thread (events into a queue)."""

    def __init__(self, url: str, path: str, token: str, last_event_id: str | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.events: queue.Queue[Any] = queue.Queue()
        self.parser = EventParser()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                line = self.response.readline()
                if not line:
                    return
                event = self.parser.feed(line.decode().rstrip("\r\n"))
                if event is not None:
                    self.events.put(event)
        except (OSError, AttributeError, ValueError):  # closed by close() from the test
            return

    def next(self, timeout: float = 15) -> Any:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self.conn.close()


def test_watch_sees_a_change_within_a_second_and_resumes_with_last_event_id(
    serve: Serve, kube: Kube, tenant: Tenant
) -> None:
    ns = tenant.namespace
    _write_entry(kube, ns, "live", 1)
    _ready_revision(kube, ns, "live", 1)

    stream = SSE(serve.url, f"/v1/watch?namespace={ns}", tenant.token)
    assert stream.status == 200
    ready = stream.next()
    assert ready.event == "ready" and ready.id
    try:
        _write_entry(kube, ns, "live", 2)
        # How fast is measured by bench/read_api.py (change → client, p99 with many clients);
        # here: the event arrives while the stream is open, with what changed.
        event = stream.next(timeout=60)
        assert event.event == "updated"
        change = json.loads(event.data)
        _ready_revision(kube, ns, "live", 2)
        assert change == {
            "kind": "ConfigEntry",
            "namespace": ns,
            "name": "live",
            "revision": 2,
            "hash": kube.get_json("configentry", "live", "-n", ns)["status"]["hash"],
        }
        seen = event.id
    finally:
        stream.close()

    # Away: three changes (and one to another entry); then resume from the last id seen.
    for pool in (3, 4, 5):
        _write_entry(kube, ns, "live", pool)
        _ready_revision(kube, ns, "live", pool)
    _write_entry(kube, ns, "other", 9)
    _ready_revision(kube, ns, "other", 1)

    resumed = SSE(serve.url, f"/v1/watch?namespace={ns}&name=live", tenant.token, seen)
    try:
        missed = [json.loads(resumed.next().data) for _ in range(3)]
        assert [m["revision"] for m in missed] == [3, 4, 5]
        assert {m["name"] for m in missed} == {"live"}
        assert resumed.next().event == "ready"
    finally:
        resumed.close()

    # An id from another stream (or one trimmed away) is told to re-read.
    stale = SSE(serve.url, f"/v1/watch?namespace={ns}", tenant.token, "deadbeef.1-0")
    try:
        assert stale.next().event == "reset"
        assert stale.next().event == "ready"
    finally:
        stale.close()


def test_watch_is_refused_without_rbac_and_sends_heartbeats(
    serve: Serve, kube: Kube, tenant: Tenant
) -> None:
    bystander = serve.account(tenant.namespace, "nobody")
    refused = SSE(serve.url, f"/v1/watch?namespace={tenant.namespace}", bystander)
    assert refused.status == 403
    refused.close()
    assert SSE(serve.url, f"/v1/watch?namespace={tenant.namespace}", "garbage").status == 401

    stream = SSE(serve.url, f"/v1/watch?namespace={tenant.namespace}", tenant.token)
    try:
        assert stream.next().event == "ready"
        eventually(lambda: stream.parser.comments >= 2, timeout=10, what="two heartbeats")
    finally:
        stream.close()


# ----------------------------------------------------------------------------- the client
def test_client_get_watch_and_last_known_good_file(
    serve: Serve, kube: Kube, tenant: Tenant, tmp_path: Path
) -> None:
    ns = tenant.namespace
    _write_entry(kube, ns, "app-config", 20)
    _ready_revision(kube, ns, "app-config", 1)
    client = FerryClient(serve.url, namespace=ns, token=tenant.token, cache_dir=tmp_path / "cache")
    config = client.get("app-config")
    assert config.data == {"db": {"poolSize": 20}} and not config.stale

    seen: queue.Queue[tuple[str, Any]] = queue.Queue()
    watch = client.watch(lambda name, cfg: seen.put((name, cfg)), names=["app-config"])
    try:
        name, first = seen.get(timeout=15)  # the state at start
        assert name == "app-config" and first.revision == 1
        _write_entry(kube, ns, "app-config", 21)
        name, changed = seen.get(timeout=60)
        assert changed.revision == 2 and changed.data == {"db": {"poolSize": 21}}
    finally:
        watch.stop()

    # The API is down (here: nothing listens where the client is pointed): the last-known-good
    # copy is served, marked stale, so the app can start.
    down = FerryClient(
        f"http://127.0.0.1:{free_port()}",
        namespace=ns,
        token=tenant.token,
        cache_dir=tmp_path / "cache",
        timeout=2,
    )
    cached = down.get("app-config")
    assert cached.stale and cached.revision == 2 and cached.data == {"db": {"poolSize": 21}}
    with pytest.raises(Exception) as excinfo:
        FerryClient(
            f"http://127.0.0.1:{free_port()}",
            namespace=ns,
            token=tenant.token,
            cache_dir=tmp_path / "empty",
            timeout=2,
        ).get("app-config")
    assert "cannot reach" in str(excinfo.value)


def test_the_example_app_runs_against_the_server(
    serve: Serve, kube: Kube, tenant: Tenant, tmp_path: Path
) -> None:
    _write_entry(kube, tenant.namespace, "example", 7)
    _ready_revision(kube, tenant.namespace, "example", 1)
    token_file = tmp_path / "token"
    token_file.write_text(tenant.token)
    example = Path(__file__).resolve().parents[2] / "examples" / "client" / "app.py"
    result = subprocess.run(
        [sys.executable, str(example), "--once", "--entry", "example"],
        env={
            **os.environ,
            "FERRY_URL": serve.url,
            "FERRY_NAMESPACE": tenant.namespace,
            "FERRY_TOKEN_FILE": str(token_file),
            "FERRY_CACHE_DIR": str(tmp_path / "cache"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"poolSize": 7' in result.stdout


# ----------------------------------------------------------------------------- OFREP
CHECKOUT = {
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": [
        {
            "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
            "variant": "on",
        },
        {
            "when": [{"attribute": "region", "op": "equals", "value": "eu-west-1"}],
            "split": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}],
        },
    ],
}
CONTEXTS: list[dict[str, Any]] = [
    {"targetingKey": "alice", "email": "alice@example.com"},
    {"targetingKey": "bob", "region": "eu-west-1"},
    {"targetingKey": "carol", "region": "eu-west-1"},
    {"targetingKey": "dave", "region": "eu-west-1"},
    {"targetingKey": "erin", "region": "us-east-1"},
    {"region": "eu-west-1"},
    {},
]


def _cli_eval(kube: Kube, ns: str, name: str, context: dict[str, Any]) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "ferry",
        "flags",
        "eval",
        f"{ns}/{name}",
        "-o",
        "json",
        "--kubeconfig",
        str(kube.kubeconfig),
    ]
    if "targetingKey" in context:
        argv += ["--targeting-key", context["targetingKey"]]
    argv += [f"--attr={k}={json.dumps(v)}" for k, v in context.items() if k != "targetingKey"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(result.stdout))


def _flag_ready(kube: Kube, ns: str, name: str) -> None:
    def ready() -> bool:
        status = kube.get_json("featureflag", name, "-n", ns).get("status") or {}
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
        )

    eventually(ready, timeout=60, what=f"FeatureFlag {ns}/{name} Ready")


def test_ofrep_answers_equal_ferry_flags_eval_and_the_openfeature_provider_reads_them(
    serve: Serve, kube: Kube, tenant: Tenant
) -> None:
    ns = tenant.namespace
    kube.apply(flag("checkout", ns, CHECKOUT))
    kube.apply(flag("legacy", ns, {**CHECKOUT, "bucketing": "flagd-v2"}))
    kube.apply(flag("off", ns, {**CHECKOUT, "state": "DISABLED"}))
    for name in ("checkout", "legacy", "off"):
        _flag_ready(kube, ns, name)

    def ofrep(key: str, context: dict[str, Any]) -> tuple[int, Any]:
        status, _, body = serve.request(
            "POST", f"/ofrep/v1/evaluate/flags/{key}", token=tenant.token, body={"context": context}
        )
        return status, body

    eventually(lambda: ofrep("checkout", {})[0] == 200, timeout=30, what="flags cached")
    for name in ("checkout", "legacy", "off"):
        for context in CONTEXTS:
            want = _cli_eval(kube, ns, name, context)
            status, got = ofrep(name, context)
            assert status == 200, got
            assert got["reason"] == want["reason"], (name, context, got, want)
            assert got.get("variant") == want["variant"], (name, context, got, want)
            assert got.get("value") == want["value"], (name, context, got, want)
            assert got["metadata"]["bucketing"] == want["bucketing"]
            assert got["metadata"]["revision"] == want["revision"]

    # Evaluations by flag and variant, bounded: the first two flags by name, the third "other".
    with urllib.request.urlopen(f"{serve.url}/metrics", timeout=10) as answer:
        families = text_string_to_metric_families(answer.read().decode())
    counted = {
        (sample.labels["flag"], sample.labels["variant"])
        for family in families
        for sample in family.samples
        if sample.name == "ferry_flag_evaluations_total" and sample.value > 0
    }
    assert {flag for flag, _ in counted} == {f"{ns}/checkout", f"{ns}/legacy", "other"}
    assert (f"{ns}/checkout", "on") in counted and ("other", "other") in counted

    status, body = ofrep("missing", {})
    assert status == 404 and body == {
        "key": "missing",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": f"flag 'missing' is not served in namespace {ns}",
    }
    status, _, body = serve.request(
        "POST", "/ofrep/v1/evaluate/flags/checkout", token=tenant.token, body={"context": "x"}
    )
    assert status == 400 and body["errorCode"] == "INVALID_CONTEXT"

    # Bulk, with ETag / If-None-Match.
    status, headers, bulk = serve.request(
        "POST", "/ofrep/v1/evaluate/flags", token=tenant.token, body={"context": CONTEXTS[1]}
    )
    assert status == 200 and [f["key"] for f in bulk["flags"]] == ["checkout", "legacy", "off"]
    status, _, _ = serve.request(
        "POST",
        "/ofrep/v1/evaluate/flags",
        token=tenant.token,
        body={"context": CONTEXTS[1]},
        headers={"If-None-Match": headers["ETag"]},
    )
    assert status == 304

    # The OpenFeature SDK with the OFREP provider from PyPI, as an app would use it.
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext

    provider = OFREPProvider(
        serve.url, headers_factory=lambda: {"Authorization": f"Bearer {tenant.token}"}
    )
    api.set_provider(provider, domain="ferry-test")
    client = api.get_client(domain="ferry-test")
    for context in CONTEXTS[:5]:
        want = _cli_eval(kube, ns, "checkout", context)
        attributes = {k: v for k, v in context.items() if k != "targetingKey"}
        details = client.get_boolean_details(
            "checkout", False, EvaluationContext(context.get("targetingKey"), attributes)
        )
        assert details.value == want["value"] and details.variant == want["variant"], context
        assert (
            str(details.reason.value if hasattr(details.reason, "value") else details.reason)
            == want["reason"]
        )
    # An unknown flag and a caller without RBAC get the app's default, with the error.
    missing = client.get_boolean_details("missing", True, EvaluationContext("x"))
    assert missing.value is True and str(missing.error_code.value) == "FLAG_NOT_FOUND"

    bystander = serve.account(ns, "flagless")
    api.set_provider(
        OFREPProvider(serve.url, headers_factory=lambda: {"Authorization": f"Bearer {bystander}"}),
        domain="ferry-test-denied",
    )
    denied = api.get_client(domain="ferry-test-denied").get_boolean_details("checkout", True)
    assert denied.value is True and denied.error_message == "forbidden"

    # Another namespace's flags: by header, allowed only with RBAC there.
    status, _, body = serve.request(
        "POST",
        "/ofrep/v1/evaluate/flags/checkout",
        token=bystander,
        body={},
        headers={"X-Ferry-Namespace": ns},
    )
    assert status == 403, body


# ----------------------------------------------------------------------------- the document
def test_openapi_document_matches_the_server_routes(serve: Serve) -> None:
    from ferry.api import server

    status, _, served = serve.request("GET", "/openapi.json")
    assert status == 200 and served == json.loads(server.openapi_document())
    from aiohttp import web

    app = server.make_app(
        server.Parts(
            cache=None, reader=None, auth=None, audience=None, default_bucketing="flagd-v3"
        )  # type: ignore[arg-type]
    )
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD" and isinstance(route.resource, web.Resource)
    }
    documented = {(path, method) for path, item in served["paths"].items() for method in item}
    assert routes == documented


def test_schemathesis_finds_no_server_error(serve: Serve, tenant: Tenant, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{serve.url}/openapi.json",
            "--url",
            serve.url,
            "-H",
            f"Authorization: Bearer {tenant.token}",
            "-H",
            f"X-Ferry-Namespace: {tenant.namespace}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--exclude-path",
            "/v1/watch",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# ----------------------------------------------------------------------------- resume rules
def test_resume_replays_only_while_the_stream_holds_every_missed_change() -> None:
    from ferry.adapters.cache import StreamState
    from ferry.api.watch import event_id, resume_from

    state = StreamState(epoch="e1", last=(2000, 0), trimmed=(1000, 5))
    assert resume_from(event_id("e1", (1500, 0)), state) == (1500, 0)
    assert resume_from(event_id("e1", (1000, 5)), state) == (1000, 5)  # the trimmed one was seen
    assert resume_from(event_id("e1", (1000, 4)), state) is None  # (1000,5) is gone: re-read
    assert resume_from(event_id("e2", (1500, 0)), state) is None  # another stream
    assert resume_from(event_id("e1", (2500, 0)), state) is None  # beyond the newest
    assert resume_from(event_id(None, (0, 0)), StreamState("e1", (10, 0), (0, 0))) == (0, 0)
    assert resume_from(event_id(None, (0, 0)), state) is None  # changes since were trimmed
    for garbage in ("", "1-0", "e1.x-0", "e1.1", "e1."):
        assert resume_from(garbage, state) is None


# ----------------------------------------------------------------------------- hostile callers
# Appended below the file's first import block (which stays as it was): hence E402.
import asyncio  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from ferry.adapters.cache import Cache  # noqa: E402


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _until_closed(sock: socket.socket, seconds: float = 20) -> bytes:
    """Everything the server sends until it closes the connection, which it must within
    ``seconds``."""
    answer = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not chunk:
            return answer
        answer += chunk
    raise AssertionError(f"still open after {seconds} s, having sent {answer[:300]!r}")


def _exchange(url: str, request: bytes) -> bytes:
    with socket.create_connection(_address(url), timeout=10) as sock:
        sock.sendall(request)
        return _until_closed(sock)


def _metric(url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        families = text_string_to_metric_families(answer.read().decode())
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _rss(pid: int) -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found is not None
    return int(found.group(1)) * 1024


async def _fill_stream(redis_url: str, namespace: str, count: int, name_size: int) -> None:
    """``count`` changes in ``namespace``, written as the operator writes them (document and
    stream entry in one script), with names of ``name_size`` characters."""
    cache = Cache(redis_url)
    try:
        for i in range(count):
            await cache.put(
                namespace,
                f"filler-{i}-" + "x" * name_size,
                revision=1,
                content_hash="h",
                data={},
                rendered={},
                format="json",
            )
    finally:
        await cache.close()


def _watch_request(namespace: str, token: str, *extra: str) -> bytes:
    lines = [
        f"GET /v1/watch?namespace={namespace} HTTP/1.1",
        "Host: ferry",
        f"Authorization: Bearer {token}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status_of(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"closed before a status line: {head!r}"
        head += chunk
    return int(head.split()[1])


def test_a_token_of_other_than_printable_ascii_is_refused_with_401(serve: Serve) -> None:
    """It was a 500 (UnicodeEncodeError while asking for the TokenReview)."""
    answer = _exchange(
        serve.url,
        b"GET /v1/configs/a/b HTTP/1.1\r\nHost: ferry\r\nAuthorization: Bearer ab\xff\xfe\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b"not printable ASCII" in answer


def test_a_deeply_nested_ofrep_body_is_a_parse_error(serve: Serve, tenant: Tenant) -> None:
    """Under the size limit, but deeper than the JSON parser recurses: 400, never a 500."""
    for path in ("/ofrep/v1/evaluate/flags/checkout", "/ofrep/v1/evaluate/flags"):
        request = urllib.request.Request(
            serve.url + path,
            data=b"[" * 100_000,
            method="POST",
            headers={"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        raw = refused.value.read()
        assert refused.value.code == 400, raw[:300]
        assert json.loads(raw)["errorCode"] == "PARSE_ERROR"


def test_refused_requests_with_large_headers_leave_no_memory_behind(
    kube: Kube, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A refused token's answer is cached; each request refused with it used to stay in memory
    with its headers for as long as the cached answer lived (here 60 s)."""
    options = ("--serve-auth-cache-ttl-seconds", "60")
    process, url = start_serve(kube, database_url, redis_url, tmp_path, options=options)
    padding = {f"X-Pad-{i}": "p" * 8000 for i in range(56)}  # ≈ 450 KB, within the limits

    def refused(_: int = 0) -> int:
        request = urllib.request.Request(
            url + "/v1/configs/a/b", headers={"Authorization": "Bearer not-a-token", **padding}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            exc.read()
            return exc.code

    try:
        assert {refused() for _ in range(20)} == {401}  # warm: the cached refusal, the allocator
        before = _rss(process.pid)
        with ThreadPoolExecutor(4) as pool:
            codes = set(pool.map(refused, range(400)))
        assert codes == {401}
        grown = _rss(process.pid) - before
        assert grown < 64 << 20, f"{grown >> 20} MiB kept after 400 refused requests"
    finally:
        process.stop()


def test_idle_and_slow_connections_are_closed_by_the_server(serve: Serve) -> None:
    """A connection has 10 s (server.KEEPALIVE_SECONDS) to send a request's headers, from when
    it opened or from the previous answer; aiohttp's default kept one for an hour."""

    def idle() -> float:
        started = time.monotonic()
        with socket.create_connection(_address(serve.url), timeout=30) as sock:
            assert sock.recv(1) == b""  # closed by the server (a TimeoutError fails the test)
        return time.monotonic() - started

    def dribbling() -> float:
        started = time.monotonic()
        with socket.create_connection(_address(serve.url), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ferry\r\n")
            while time.monotonic() - started < 30:
                try:
                    if sock.recv(1) == b"":
                        return time.monotonic() - started
                except TimeoutError:
                    sock.sendall(b"X-Slow: 1\r\n")  # one more header line a second, never the end
                except OSError:  # reset by the server
                    return time.monotonic() - started
        raise AssertionError("a request whose headers never end was still open after 30 s")

    with ThreadPoolExecutor(2) as pool:
        waits = [pool.submit(idle), pool.submit(dribbling)]
        # Closed by the server's 10 s bound: well before the 30 s after which it counts as never.
        assert [wait.result(timeout=60) < 25 for wait in waits] == [True, True]


def test_a_watch_whose_client_stops_reading_is_ended(
    serve: Serve, tenant: Tenant, redis_url: str
) -> None:
    """A blocked write used to wait for the client for ever, past the watch's lifetime."""
    baseline = _metric(serve.url, "ferry_serve_watchers")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, soon full
    sock.settimeout(10)
    try:
        sock.connect(_address(serve.url))
        sock.sendall(_watch_request(tenant.namespace, tenant.token))
        seen = b""
        while b"event: ready" not in seen:
            chunk = sock.recv(4096)
            assert chunk, seen
            seen += chunk
        # ≈ 15 MB of events this client never reads (large names make few of them).
        asyncio.run(_fill_stream(redis_url, tenant.namespace, 300, 50_000))
        eventually(
            lambda: _metric(serve.url, "ferry_serve_watchers") <= baseline,
            timeout=45,
            what="the stalled watch to be ended",
        )
        _until_closed(sock)  # what was sent arrives, then the end (a TimeoutError fails)
    finally:
        sock.close()


def test_watches_past_the_per_user_cap_are_refused_with_429(serve: Serve, tenant: Tenant) -> None:
    """1,024 watches of one user per server process (watch.WATCHES_PER_USER)."""
    address = _address(serve.url)
    request = _watch_request(tenant.namespace, tenant.token)
    opened: list[socket.socket] = []
    try:
        for _ in range(1024):
            sock = socket.create_connection(address, timeout=10)
            opened.append(sock)
            sock.sendall(request)
            assert _status_of(sock) == 200
        answer = _exchange(
            serve.url, _watch_request(tenant.namespace, tenant.token, "Connection: close")
        )
        assert answer.startswith(b"HTTP/1.1 429"), answer[:300]
        assert b"1024 watches" in answer and b"Retry-After" in answer
        opened.pop().close()

        def admitted() -> bool:
            with socket.create_connection(address, timeout=10) as sock:
                sock.sendall(request)
                return _status_of(sock) == 200

        eventually(admitted, timeout=10, what="a watch once one was closed")
    finally:
        for sock in opened:
            sock.close()


def test_a_resume_past_a_long_gap_is_told_to_re_read(
    serve: Serve, tenant: Tenant, redis_url: str
) -> None:
    """Replaying read every change of every namespace after the id (up to the stream's 10,000)
    for each reconnect; past 1,000 (watch.MAX_REPLAY) the client re-reads instead."""
    first = SSE(serve.url, f"/v1/watch?namespace={tenant.namespace}", tenant.token)
    try:
        ready = first.next()
        assert ready.event == "ready"
    finally:
        first.close()
    asyncio.run(_fill_stream(redis_url, f"elsewhere-{uuid.uuid4().hex[:8]}", 1001, 8))
    resumed = SSE(serve.url, f"/v1/watch?namespace={tenant.namespace}", tenant.token, ready.id)
    try:
        assert resumed.next().event == "reset"
        assert resumed.next().event == "ready"
    finally:
        resumed.close()


def test_a_tenant_probing_names_is_throttled_and_others_are_served(
    serve: Serve, kube: Kube, tenant: Tenant, operator: Operator
) -> None:
    """Each name not yet asked about costs a SubjectAccessReview (and a PostgreSQL read when it
    does not exist); one user gets a budget of them (200 at once, 20 a second after), so others
    keep being answered."""
    other = kube.namespace("serve")
    kube.apply(schema("payments", other, PAYMENTS))
    other_token = serve.account(other, "app", ["configentries"])
    _write_entry(kube, other, "api", 4)
    _ready_revision(kube, other, "api", 1)

    reviewed = _metric(serve.url, "ferry_serve_auth_total", check="access", outcome="reviewed")
    started = time.monotonic()
    for _ in range(2000):
        path = f"/v1/configs/{tenant.namespace}/probe-{uuid.uuid4().hex}"
        status, headers, body = serve.request("GET", path, token=tenant.token)
        if status != 404:
            break
    elapsed = time.monotonic() - started
    assert status == 429, body
    assert f"system:serviceaccount:{tenant.namespace}:app" in body["message"]
    assert "too many" in body["message"] and int(headers["Retry-After"]) >= 1
    spent = _metric(serve.url, "ferry_serve_auth_total", check="access", outcome="reviewed")
    assert spent - reviewed <= 200 + 20 * elapsed + 5

    status, _, body = serve.request("GET", f"/v1/configs/{other}/api", token=other_token)
    assert status == 200 and body["data"] == {"db": {"poolSize": 4}}


def test_a_missing_config_asked_for_again_is_answered_from_memory_until_created(
    serve: Serve, kube: Kube, tenant: Tenant
) -> None:
    """Not found used to be a PostgreSQL query every time."""
    path = f"/v1/configs/{tenant.namespace}/later"
    assert serve.request("GET", path, token=tenant.token)[0] == 404
    remembered = _metric(serve.url, "ferry_serve_reads_total", what="config", source="absent")
    assert serve.request("GET", path, token=tenant.token)[0] == 404
    after = _metric(serve.url, "ferry_serve_reads_total", what="config", source="absent")
    assert after == remembered + 1
    _write_entry(kube, tenant.namespace, "later", 6)
    _ready_revision(kube, tenant.namespace, "later", 1)
    status, _, body = serve.request("GET", path, token=tenant.token)
    assert status == 200 and body["data"] == {"db": {"poolSize": 6}}
