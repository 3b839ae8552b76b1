"""A Redis server from Debian's packages on a free loopback port, with persistence off.

Redis is only a cache for Ferry, so nothing is saved to disk.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from ferry.devenv.process import Process, StartupError, free_port, spawn, wait_until


@dataclass
class Redis:
    directory: Path
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.stop()

    def pause(self) -> None:
        """Stop the server: Redis is 'down' until ``resume`` (empty: it was only a cache)."""
        self.process.stop()

    def resume(self, timeout: float = 30) -> None:
        self.process = _run_server(self.directory, self.port, timeout)


def start_redis(directory: Path, *, timeout: float = 30) -> Redis:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return Redis(directory, port, _run_server(directory, port, timeout))


def _run_server(directory: Path, port: int, timeout: float) -> Process:
    server = shutil.which("redis-server")
    if server is None:
        raise StartupError("redis-server not found: run `make deps` (apt-get install redis-server)")
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--daemonize", "no"]
    process = spawn("redis", argv, directory / "redis.log")
    wait_until(process, lambda: _pong(port), timeout=timeout, what=f"PONG on 127.0.0.1:{port}")
    return process


def _pong(port: int) -> bool:
    """Ask Redis itself: an open port alone could be someone else's server."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")
