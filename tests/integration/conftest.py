"""The operator under test: `ferry run` from this tree, in its own process, as in production."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ferry.devenv.process import Process, free_port, log_tail
from ferry.devenv.stack import run_operator
from tests.support import Kube


@dataclass
class Operator:
    """Start, kill and restart the operator; tests that stop it must leave it running."""

    env: dict[str, str]
    log: Path
    workdir: Path
    api_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 60) -> None:
        self.process = run_operator(
            self.env,
            self.workdir / "webhook",
            self.log,
            api_port=self.api_port,
            webhook_port=self.webhook_port,
            timeout=timeout,
        )

    def kill(self) -> None:
        """SIGKILL: no clean-up handlers run, as when a node dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop(timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def ensure_running(self) -> None:
        if self.process is None or not self.process.alive():
            self.start()

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)


@pytest.fixture(scope="session")
def ferry_operator(
    kube: Kube, database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    workdir = tmp_path_factory.mktemp("operator")
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "FERRY_DATABASE_URL": database_url,
        "FERRY_REDIS_URL": redis_url,
    }
    operator = Operator(env=env, log=workdir / "operator.log", workdir=workdir)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture
def operator(ferry_operator: Operator) -> Operator:
    """The session's operator, started again if an earlier test killed it."""
    ferry_operator.ensure_running()
    return ferry_operator
