"""Session fixtures: the real servers the integration tests run against.

Each server starts only when a test asks for it, on free loopback ports in a temp dir, and stops
at the end of the session (also when tests fail). Point the tests at servers of your own with
``FERRY_TEST_KUBECONFIG``, ``FERRY_TEST_DATABASE_URL`` and ``FERRY_TEST_REDIS_URL``; with Docker
and kind present, ``FERRY_TEST_KIND=1`` runs the Kubernetes side on a kind cluster via pytest-kind.
A Vault of your own: ``FERRY_TEST_VAULT_ADDR`` and ``FERRY_TEST_VAULT_TOKEN`` (a token that may
manage mounts, auth methods and policies).

``make test`` runs the files in parallel (pytest-xdist, ``-n auto --dist loadfile``): each worker
is a session of its own, so it starts its own servers, and a file's tests stay together in one
worker, in order. How many workers: :func:`pytest_xdist_auto_num_workers`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferry.devenv.controlplane import ensure_binaries, start_control_plane
from ferry.devenv.postgres import Postgres, start_postgres
from ferry.devenv.redis import Redis, start_redis
from ferry.devenv.stack import install_crds
from ferry.devenv.vault import Vault, ensure_vault_binary, start_vault
from tests.support import Kube

#: Servers of one's own that the tests would share (see the module docstring).
PRESETS = (
    "FERRY_TEST_KUBECONFIG",
    "FERRY_TEST_KIND",
    "FERRY_TEST_DATABASE_URL",
    "FERRY_TEST_REDIS_URL",
    "FERRY_TEST_VAULT_ADDR",
)
#: Each worker runs its own API server, etcd, PostgreSQL, Redis, Vault and the operators its
#: tests start: 3.1 GB of memory in use at the peak of a run with two workers, 0.5 GB idle, so
#: ≈ 1.3 GB a worker; past a few workers the machine's memory, not its CPUs, is the limit.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker a CPU, at most :data:`MAX_WORKERS`; none (one process, as plain
    ``pytest``) with servers of one's own: two workers would share them, and the cluster-scoped
    objects the tests create (Ferry's webhook configurations and CRDs, the history API's
    APIService) are one per server."""
    if any(os.environ.get(name) for name in PRESETS):
        return 0
    cpus = len(os.sched_getaffinity(0))
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


@pytest.fixture(scope="session", autouse=True)
def kubectl_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """kubectl's discovery and HTTP cache in the session's temp dir, not ``~/.kube/cache``.

    Every API server the tests start listens on a new port, and kubectl keeps a cache per
    host:port: left in the home directory, two days of test runs came to 1.1 GiB there. Every
    kubectl the tests run (also through ``ferry`` and the dev stack) inherits the variable."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KUBECACHEDIR", str(tmp_path_factory.mktemp("kubectl-cache")))
        yield


@pytest.fixture(scope="session")
def k8s_bin_dir() -> Path:
    return ensure_binaries()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory, k8s_bin_dir: Path) -> Iterator[Kube]:
    """A kube-apiserver with Ferry's CRDs installed and Established."""
    kubectl = k8s_bin_dir / "kubectl"
    preset = os.environ.get("FERRY_TEST_KUBECONFIG")
    if preset:
        install_crds(kubectl, Path(preset))
        yield Kube(Path(preset), kubectl)
        return
    if os.environ.get("FERRY_TEST_KIND") == "1":
        yield from _kind_cluster(kubectl)
        return
    control_plane = start_control_plane(tmp_path_factory.mktemp("k8s"), k8s_bin_dir)
    try:
        install_crds(kubectl, control_plane.kubeconfig)
        yield Kube(control_plane.kubeconfig, kubectl)
    finally:
        control_plane.stop()


def _kind_cluster(kubectl: Path) -> Iterator[Kube]:
    if shutil.which("docker") is None or shutil.which("kind") is None:
        pytest.exit("FERRY_TEST_KIND=1 needs docker and kind on PATH", returncode=2)
    from pytest_kind import KindCluster  # opt-in: pip install pytest-kind

    cluster = KindCluster("ferry-test")
    cluster.create()
    try:
        install_crds(kubectl, Path(cluster.kubeconfig_path))
        yield Kube(Path(cluster.kubeconfig_path), kubectl)
    finally:
        cluster.delete()


@dataclass
class Server:
    """A database or cache the tests use; ``local`` is set when the tests started it themselves
    (only then can a test take it down and bring it back)."""

    url: str
    local: Postgres | Redis | None = None

    def pause(self) -> None:
        if self.local is None:
            pytest.skip("needs a server the tests started (not FERRY_TEST_*_URL)")
        self.local.pause()

    def resume(self) -> None:
        assert self.local is not None
        self.local.resume()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    preset = os.environ.get("FERRY_TEST_DATABASE_URL")
    if preset:
        yield Server(preset)
        return
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield Server(server.url, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(postgres: Server) -> str:
    return postgres.url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    preset = os.environ.get("FERRY_TEST_REDIS_URL")
    if preset:
        yield Server(preset)
        return
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield Server(server.url, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: Server) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def vault_binary() -> Path:
    """The vault binary (built once from Go modules; a cache hit afterwards)."""
    if shutil.which("go") is None and not os.environ.get("FERRY_VAULT_BIN"):
        cached = Path(os.environ.get("FERRY_CACHE_DIR", Path.home() / ".cache" / "ferry"))
        if not (cached / "vault-v1.14.2" / "bin" / "vault").exists():
            pytest.skip(
                "Vault tests skipped: no Go toolchain to build vault (operator/ferry/devenv/"
                "vault-binary.sh); install Go, or set FERRY_VAULT_BIN or FERRY_TEST_VAULT_ADDR"
            )
    return ensure_vault_binary()


@pytest.fixture(scope="session")
def vault(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Vault]:
    """A Vault server (dev mode, loopback) and a token that can configure it.

    ``vault.process`` is None when it is a server of yours (``FERRY_TEST_VAULT_ADDR``/``_TOKEN``).
    Tests that stop or seal Vault start a private one with ``start_vault`` instead.
    """
    address = os.environ.get("FERRY_TEST_VAULT_ADDR")
    if address:
        token = os.environ.get("FERRY_TEST_VAULT_TOKEN")
        if not token:
            pytest.exit("FERRY_TEST_VAULT_ADDR needs FERRY_TEST_VAULT_TOKEN too", returncode=2)
        yield Vault(address.rstrip("/"), token)
        return
    binary: Path = request.getfixturevalue("vault_binary")
    server = start_vault(tmp_path_factory.mktemp("vault"), binary=binary)
    try:
        yield server
    finally:
        server.stop()
