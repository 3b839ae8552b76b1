"""Redis Sentinel, end to end on real servers: a primary, a replica and three sentinels (Debian's
``redis-server``, ``--sentinel`` for the sentinels) with passwords on both the servers and the
sentinels; the operator and ``ferry serve`` configured through the chart's values; two
failovers, one by ``SENTINEL FAILOVER`` (the old primary lives on as a replica and refuses
writes) and one by killing the primary (the sentinels agree it is down and promote the replica).
After each, a change is cached on the new primary, served by ``ferry serve`` from Redis and
announced on its watch stream.

Why an API server of this module's own: ``ferry run`` is cluster-wide and registers its own
admission webhooks, so a second operator on the session's API server would reconcile the session's
entries (and the session's operator these, against the session's Redis). PostgreSQL is the
session's (namespaces are unique, so nothing collides).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.adapters.cache import Cache, CacheUnavailable
from ferry.devenv.controlplane import WEBHOOK_CLIENT_CA
from ferry.devenv.redis import SentinelGroup, start_sentinel_group
from ferry.settings import CacheSettings
from tests.integration.conftest import Operator
from tests.integration.test_chart import helm_template, tools  # noqa: F401 (a fixture)
from tests.integration.test_serve import SSE, Serve, start_serve
from tests.integration.webhook_client import CLIENT_CA_ENV, api_server_pki
from tests.support import Kube, condition, entry, eventually, get_or_none

pytestmark = pytest.mark.integration

#: The Secret the chart is told holds the URL and the sentinels' password (its keys, as a
#: platform team would create it); the test stands in for the kubelet and fills them in.
REDIS_SECRET = "ferry-redis"


# --- fixtures: an API server of this module's own, a Sentinel group, the operator and serve -----


@pytest.fixture(scope="module")
def cluster(own_cluster: Kube) -> Kube:
    return own_cluster


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    started = start_sentinel_group(tmp_path / "redis", sentinels=3, master="ferry-cache")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def cache_env(
    request: pytest.FixtureRequest, group: SentinelGroup, tmp_path: Path
) -> dict[str, str]:
    """The Redis settings the chart's Deployment gives the operator for these sentinels, as the
    kubelet would pass them (values as they are, Secret keys filled in)."""
    values = {
        "database": {"existingSecret": {"name": "ferry-database"}},
        "redis": {
            "existingSecret": {"name": REDIS_SECRET, "key": "url"},
            "sentinel": {
                "hosts": group.sentinel_addresses,
                "master": group.master,
                "passwordSecretRef": {"name": REDIS_SECRET, "key": "sentinel-password"},
            },
        },
    }
    secret = {"url": group.url, "sentinel-password": group.sentinel_password}
    helm = request.getfixturevalue("tools")["helm"]  # test_chart's: helm built and cached
    docs = helm_template(helm, tmp_path, values)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for variable in container["env"]:
        name = variable["name"]
        if not name.startswith(("FERRY_REDIS_", "FERRY_CACHE_")):
            continue
        if "value" in variable:
            env[name] = str(variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["name"] == REDIS_SECRET, variable
            env[name] = secret[ref["key"]]
    assert set(env) == {
        "FERRY_REDIS_URL",
        "FERRY_CACHE_SENTINELS",
        "FERRY_CACHE_SENTINEL_MASTER",
        "FERRY_CACHE_SENTINEL_PASSWORD",
    }
    return env


@pytest.fixture
def sentinel_operator(
    cluster: Kube, database_url: str, cache_env: dict[str, str], tmp_path: Path
) -> Iterator[Operator]:
    pki = api_server_pki(cluster)
    assert pki is not None  # this module's own control plane presents a client certificate
    workdir = tmp_path / "operator"
    workdir.mkdir()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "FERRY_DATABASE_URL": database_url,
        CLIENT_CA_ENV: str(pki / WEBHOOK_CLIENT_CA),
        # A write that found Redis unavailable is retried at most 2 s later.
        "FERRY_RECONCILE_REQUEUE_MAX_SECONDS": "2",
        **cache_env,
    }
    operator = Operator(env=env, log=workdir / "operator.log", workdir=workdir)
    try:
        operator.start()
        yield operator
    finally:
        operator.stop()
        print(f"--- {operator.log}\n{operator.log_tail(60)}")


@pytest.fixture
def sentinel_serve(
    cluster: Kube,
    database_url: str,
    cache_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Serve]:
    # start_serve passes its own environment on: the sentinel settings go there.
    for name, value in cache_env.items():
        monkeypatch.setenv(name, value)
    workdir = tmp_path / "serve"
    workdir.mkdir()
    process, url = start_serve(cluster, database_url, cache_env["FERRY_REDIS_URL"], workdir)
    try:
        yield Serve(url, process, cluster)
    finally:
        process.stop()


# --- helpers -------------------------------------------------------------------------------------


def wait_cached_on(
    kube: Kube, group: SentinelGroup, port: int, ns: str, name: str, revision: int
) -> dict[str, Any]:
    """Wait until the entry reports ``Cached=True`` for this generation at ``revision`` and the
    server on ``port`` holds that revision; return the cached document."""

    def probe() -> dict[str, Any]:
        obj = get_or_none(kube, "configentry", name, "-n", ns) or {}
        status = obj.get("status") or {}
        cached = condition(obj, "Cached") or {}
        seen = f"status.revision {status.get('revision')}, Cached {cached}"
        assert status.get("revision") == revision, seen
        assert cached.get("status") == "True", seen
        assert cached.get("observedGeneration") == obj["metadata"]["generation"], seen
        with group.server(port) as client:
            raw = client.get(f"ferry:config:{ns}:{name}")
        document = json.loads(raw) if raw else {}
        assert document.get("revision") == revision, f"on :{port}: {document or None}"
        assert document["hash"] == status["hash"]
        return dict(document)

    return eventually(
        probe, timeout=90, interval=0.5, what=f"{ns}/{name} revision {revision} cached on :{port}"
    )


def next_update(stream: SSE) -> dict[str, Any]:
    event = stream.next(timeout=60)
    assert event.event == "updated", (event.event, event.data)
    return dict(json.loads(event.data))


def served_from_redis(serve: Serve, ns: str, name: str, token: str, revision: int) -> bool:
    """``ferry serve`` answers the entry at ``revision``, read from Redis."""
    status, headers, body = serve.request("GET", f"/v1/configs/{ns}/{name}", token=token)
    assert status == 200, body
    answered = (body["revision"], headers["X-Ferry-Source"])
    assert answered == (revision, "redis"), f"ferry serve answered {answered}"
    return True


# --- tests ---------------------------------------------------------------------------------------


def test_entries_are_cached_through_sentinel_and_follow_two_failovers(
    cluster: Kube,
    group: SentinelGroup,
    sentinel_operator: Operator,
    sentinel_serve: Serve,
) -> None:
    kube, serve = cluster, sentinel_serve
    ns = kube.namespace("sentinel")
    token = serve.account(ns, "app", ["configentries"])
    first = group.primary()

    kube.apply(entry("e", ns, {"data": {"v": 1}}))
    wait_cached_on(kube, group, first, ns, "e", 1)
    eventually(lambda: served_from_redis(serve, ns, "e", token, 1), what="served from Redis")
    stream = SSE(serve.url, f"/v1/watch?namespace={ns}", token)
    try:
        assert stream.status == 200
        assert stream.next().event == "ready"

        # 1. SENTINEL FAILOVER: the replica is promoted, the old primary becomes its replica
        # (connections to it stay open, and it answers writes with READONLY).
        promoted = group.failover()
        assert promoted != first
        with group.server(first) as old:
            assert old.info("replication")["role"] == "slave"
        kube.apply(entry("e", ns, {"data": {"v": 2}}))
        wait_cached_on(kube, group, promoted, ns, "e", 2)
        assert next_update(stream)["revision"] == 2
        assert served_from_redis(serve, ns, "e", token, 2)

        # 2. The primary dies: the sentinels agree it is down and promote the other server.
        survivor = group.kill_primary()
        assert survivor == first
        kube.apply(entry("e", ns, {"data": {"v": 3}}))
        wait_cached_on(kube, group, survivor, ns, "e", 3)
        assert next_update(stream)["revision"] == 3
        assert served_from_redis(serve, ns, "e", token, 3)
    finally:
        stream.close()

    # The passwords of the servers and of the sentinels are nowhere a user or an attacker reads.
    shown = json.dumps(kube.get_json("configentry", "e", "-n", ns))
    shown += json.dumps(kube.get_json("events", "-n", ns))
    shown += sentinel_operator.log.read_text(errors="replace")
    shown += serve.process.log.read_text(errors="replace")
    for secret in (group.password, group.sentinel_password):
        assert secret not in shown


def test_no_sentinel_answering_is_reported_naming_the_sentinels_and_no_password(
    tmp_path: Path,
) -> None:
    group = start_sentinel_group(tmp_path / "redis", sentinels=1, master="ferry-cache")
    try:
        settings = CacheSettings(
            url=group.url,
            sentinels=tuple(group.sentinel_addresses),
            sentinel_master=group.master,
            sentinel_password=group.sentinel_password,
            timeout_seconds=1,
        )

        async def put(cache_settings: CacheSettings) -> str | None:
            cache = Cache.from_settings(cache_settings)
            try:
                await cache.put(
                    "ns", "e", revision=1, content_hash="h", data={}, rendered={}, format="json"
                )
            except CacheUnavailable as exc:
                return str(exc)
            finally:
                await cache.close()
            return None

        assert asyncio.run(put(settings)) is None  # the right passwords: written
        with group.server(group.primary()) as client:
            assert client.exists("ferry:config:ns:e")

        wrong = dataclasses.replace(settings, sentinel_password="not-the-password")
        refused = asyncio.run(put(wrong))
        for sentinel in group.sentinels.values():
            sentinel.stop()
        down = asyncio.run(put(settings))
        for message in (refused, down):
            assert message is not None
            assert group.sentinel_addresses[0] in message and "'ferry-cache'" in message
            assert group.password not in message and group.sentinel_password not in message
    finally:
        group.stop()
