"""A Redis server from Debian's packages on a free loopback port, with persistence off; or a
Sentinel group: a primary, a replica and one or three sentinels (the same ``redis-server``
binary run with ``--sentinel``), to try and test failover.

Redis is only a cache for Ferry, so nothing is saved to disk.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from ferry.devenv.process import Process, StartupError, free_port, log_tail, spawn, wait_until


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


def _redis_server() -> str:
    server = shutil.which("redis-server")
    if server is None:
        raise StartupError("redis-server not found: run `make deps` (apt-get install redis-server)")
    return server


def _run_server(directory: Path, port: int, timeout: float) -> Process:
    server = _redis_server()
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


# ------------------------------------------------------------------------------ Redis Sentinel
#: How soon a sentinel counts a silent primary as down, and how long a failover may take (also,
#: times two, how long before the same sentinel may fail the same primary over again): short,
#: so that a test's failover takes seconds, not the default minutes.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


@dataclass
class SentinelGroup:
    """A primary and a replica watched by one or three sentinels, all on loopback.

    Data servers are known by port (the primary changes with each failover; ask ``primary``).
    ``password`` is the data servers' (``requirepass``/``masterauth``, in their config files,
    never on a command line), ``sentinel_password`` the sentinels' own ``requirepass``.
    """

    directory: Path
    master: str
    password: str = field(repr=False)
    sentinel_password: str = field(repr=False)
    servers: dict[int, Process] = field(default_factory=dict)
    sentinels: dict[int, Process] = field(default_factory=dict)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinels]

    @property
    def url(self) -> str:
        """Ferry's ``cache.url`` with these sentinels: the server's password and database (the
        host stands for the primary's name; the sentinels give its address)."""
        return f"redis://:{self.password}@{self.master}/0"

    def server(self, port: int) -> redis.Redis:
        """A client of one data server (whatever its role now)."""
        return _client(port, self.password)

    def sentinel(self, port: int) -> redis.Redis:
        return _client(port, self.sentinel_password)

    def primary(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        last: Exception | None = None
        for port in self.sentinels:
            try:
                with self.sentinel(port) as client:
                    address = client.sentinel_get_master_addr_by_name(self.master)
                if address:
                    return int(address[1])
            except redis.RedisError as exc:
                last = exc
        raise StartupError(f"no sentinel names a primary for {self.master!r} (last error: {last})")

    def failover(self, timeout: float = 60) -> int:
        """``SENTINEL FAILOVER``: the replica is promoted and the old primary turned into its
        replica (both stay up). Returns the new primary's port once every sentinel names it,
        it says it is a primary, and the old one says it is a replica."""
        old = self.primary()
        deadline = time.monotonic() + timeout
        # The sentinel must know a healthy replica to promote ("NOGOODSLAVE" until it does).
        sentinel = next(iter(self.sentinels))
        while True:
            try:
                with self.sentinel(sentinel) as client:
                    client.sentinel_failover(self.master)
                break
            except redis.ResponseError as exc:
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise StartupError(f"SENTINEL FAILOVER {self.master}: {exc}") from exc
                time.sleep(0.2)
        new = self._wait_for_new_primary(old, deadline, "SENTINEL FAILOVER")

        def demoted() -> bool:
            with self.server(old) as client:
                return bool(client.info("replication")["role"] == "slave")

        _poll(demoted, deadline, f"the old primary :{old} to turn replica", self._logs)
        return new

    def kill_primary(self, timeout: float = 60) -> int:
        """SIGKILL the primary, as when its node dies; the sentinels agree it is down and
        promote the replica. Returns the new primary's port (the old one stays dead)."""
        old = self.primary()
        killed = self.servers.pop(old)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.stop(timeout=5)  # reaped
        return self._wait_for_new_primary(old, time.monotonic() + timeout, "the kill")

    def _wait_for_new_primary(self, old: int, deadline: float, after: str) -> int:
        def promoted() -> int | None:
            named = set()
            for port in self.sentinels:
                with self.sentinel(port) as client:
                    address = client.sentinel_get_master_addr_by_name(self.master)
                named.add(int(address[1]) if address else None)
            if len(named) != 1 or old in named or None in named:
                return None
            (new,) = named
            with self.server(int(new)) as client:
                return int(new) if client.info("replication")["role"] == "master" else None

        return _poll(promoted, deadline, f"a new primary after {after} (was :{old})", self._logs)

    def _logs(self) -> str:
        processes = [*self.servers.values(), *self.sentinels.values()]
        return "\n".join(f"--- {p.log}\n{log_tail(p.log, 8)}" for p in processes)

    def stop(self) -> None:
        for process in [*self.sentinels.values(), *self.servers.values()]:
            process.stop()


def start_sentinel_group(
    directory: Path,
    *,
    sentinels: int = 1,
    master: str = "ferry",
    timeout: float = 60,
) -> SentinelGroup:
    """A primary, a replica and ``sentinels`` (1 or 3; quorum 1 or 2) monitoring them as
    ``master``, with random passwords, ready when every sentinel sees the replica (and, with
    three, the other sentinels). Everything started is stopped again if anything fails."""
    if sentinels not in (1, 3):
        raise ValueError("sentinels: 1 or 3 (a quorum needs a majority)")
    directory.mkdir(parents=True, exist_ok=True)
    group = SentinelGroup(directory, master, secrets.token_hex(16), secrets.token_hex(16))
    deadline = time.monotonic() + timeout
    try:
        primary = _start_data_server(group, None, deadline)
        _start_data_server(group, primary, deadline)
        for _ in range(sentinels):
            _start_sentinel(group, primary, quorum=sentinels // 2 + 1, deadline=deadline)

        def watching() -> bool:
            for port in group.sentinels:
                with group.sentinel(port) as client:
                    state = client.sentinel_master(master)
                if int(state["num-slaves"]) < 1 or state["flags"] != "master":
                    return False
                if int(state["num-other-sentinels"]) != sentinels - 1:
                    return False
            return True

        _poll(watching, deadline, "the sentinels to see the replica and each other", group._logs)
    except BaseException:
        group.stop()
        raise
    return group


def _client(port: int, password: str) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=2, decode_responses=True
    )


def _start_data_server(group: SentinelGroup, primary: int | None, deadline: float) -> int:
    port = free_port()
    name = f"redis-{port}"
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        'save ""',
        "appendonly no",
        f"dir {group.directory}",
        f"dbfilename {name}.rdb",
        f"requirepass {group.password}",
        f"masterauth {group.password}",
    ]
    if primary is not None:
        lines.append(f"replicaof 127.0.0.1 {primary}")
    config = _write_config(group.directory / f"{name}.conf", lines)
    process = spawn(name, [_redis_server(), str(config)], group.directory / f"{name}.log")
    group.servers[port] = process

    def ready() -> bool:
        with group.server(port) as client:
            info = client.info("replication")
        return primary is None or info.get("master_link_status") == "up"

    what = "PONG" if primary is None else f"replication from :{primary}"
    wait_until(process, ready, timeout=_left(deadline), what=f"{what} on 127.0.0.1:{port}")
    return port


def _start_sentinel(group: SentinelGroup, primary: int, *, quorum: int, deadline: float) -> None:
    port = free_port()
    name = f"sentinel-{port}"
    master = group.master
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {group.directory}",
        f"sentinel monitor {master} 127.0.0.1 {primary} {quorum}",
        f"sentinel auth-pass {master} {group.password}",
        f"sentinel down-after-milliseconds {master} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {master} {FAILOVER_TIMEOUT_MS}",
        f"requirepass {group.sentinel_password}",
        # The password this sentinel gives the others (they all ask for the same one).
        f"sentinel sentinel-pass {group.sentinel_password}",
    ]
    # A sentinel rewrites its configuration file (what it learnt): it must be its own.
    config = _write_config(group.directory / f"{name}.conf", lines)
    argv = [_redis_server(), str(config), "--sentinel"]
    process = spawn(name, argv, group.directory / f"{name}.log")
    group.sentinels[port] = process

    def ready() -> bool:
        with group.sentinel(port) as client:
            return bool(client.sentinel_get_master_addr_by_name(master))

    wait_until(process, ready, timeout=_left(deadline), what=f"sentinel on 127.0.0.1:{port}")


def _write_config(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds passwords
    return path


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _poll(probe: Callable[[], Any], deadline: float, what: str, logs: Callable[[], str]) -> Any:
    """``probe()`` until it returns something truthy (errors count as not yet), or fail at the
    deadline naming ``what``, the last error and the servers' logs."""
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (redis.RedisError, OSError) as exc:
            last = exc
        else:
            if found:
                return found
            last = found
        time.sleep(0.1)
    raise StartupError(f"timed out waiting for {what} (last: {last!r})\n{logs()}")
