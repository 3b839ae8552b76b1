"""Broken environments give one clear line naming what failed and what to do, never a hang."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferry.devenv import redis as redis_devenv
from ferry.devenv.controlplane import BINARIES_SCRIPT
from ferry.devenv.process import StartupError, pid_alive, spawn, wait_until


def test_missing_go_toolchain_is_one_clear_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "flock", "python3"):  # everything but go
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FERRY_CACHE_DIR": str(tmp_path / "c")}

    result = subprocess.run(
        ["bash", str(BINARIES_SCRIPT)], env=env, capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "control-plane-binaries: no Go toolchain on PATH: install Go >= 1.24 "
        "(https://go.dev/dl) and run again"
    ]


def test_a_server_that_never_becomes_ready_is_stopped_and_named(tmp_path: Path) -> None:
    process = spawn(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleeper.log"
    )
    start = time.monotonic()

    with pytest.raises(StartupError) as raised:
        wait_until(process, lambda: False, timeout=1.5, what="a probe that never passes")

    assert time.monotonic() - start < 10
    assert "sleeper did not become ready (a probe that never passes) within 2s" in str(raised.value)
    assert str(tmp_path / "sleeper.log") in str(raised.value)
    time.sleep(0.2)
    assert not pid_alive(process.pid)


def test_a_server_that_exits_at_once_fails_fast_with_its_log(tmp_path: Path) -> None:
    process = spawn(
        "crasher",
        [sys.executable, "-c", "print('bind: address in use'); exit(3)"],
        tmp_path / "crasher.log",
    )

    start = time.monotonic()
    with pytest.raises(StartupError) as raised:
        wait_until(process, lambda: False, timeout=60, what="its port")

    assert time.monotonic() - start < 10
    assert "crasher exited before its port" in str(raised.value)
    assert "bind: address in use" in str(raised.value)


def test_a_busy_port_is_reported_not_waited_on(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make deps)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(redis_devenv, "free_port", lambda: port)
        start = time.monotonic()

        with pytest.raises(StartupError) as raised:
            redis_devenv.start_redis(tmp_path / "redis", timeout=20)

    assert time.monotonic() - start < 15
    assert "redis exited before" in str(raised.value)
    assert "Address already in use" in str(raised.value)
    assert os.path.exists(tmp_path / "redis" / "redis.log")
