"""Starting, waiting for and stopping local server processes.

Every wait has a deadline and every failure names the server, the log to read and what to do, so a
broken environment gives one clear line instead of a hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class StartupError(RuntimeError):
    """A server did not start: the message says which one, why, and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 for a server about to start, which no other process is given
    until this one exits.

    A port is chosen some time before the server binds it (a test's operator keeps its ports
    across restarts), and meanwhile two things could take it: the kernel, which hands out the
    ports of its ephemeral range to every ``connect()`` and ``bind(port 0)`` on the machine, and
    another process of the test run choosing a port the same way. So ports come from outside the
    ephemeral range, and each is reserved with a lock on its byte of one shared file: a POSIX
    record lock, which the kernel drops when the process that took it ends, so nothing is left
    to clean up. The bind check skips what something already listens on.
    """
    low, high = _ephemeral_range()
    outside = range(_FIRST_PORT, low) if low - _FIRST_PORT >= 4096 else range(high + 1, 65536)
    for port in random.sample(outside, min(len(outside), 512)):
        if port not in _reserved and _reserve(port) and _bindable(port):
            return port
    raise StartupError(f"no free TCP port on 127.0.0.1 in {outside.start}-{outside.stop - 1}")


#: Below the usual ephemeral ranges and above the well-known services' ports.
_FIRST_PORT = 20000
_reserved: set[int] = set()  # this process's: its own record locks never conflict with each other
_lock_file: int | None = None


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return int(low), int(high)


def _reserve(port: int) -> bool:
    global _lock_file
    if _lock_file is None:
        path = Path(tempfile.gettempdir()) / "ferry-ports.lock"
        try:
            _lock_file = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # another user's file: their ports are theirs to collide with
            _lock_file = -1
    if _lock_file >= 0:
        try:
            fcntl.lockf(_lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port, os.SEEK_SET)
        except OSError:  # another live process holds it
            return False
    _reserved.add(port)  # without the lock file too: this process never hands it out twice
    return True


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class Process:
    """A server process we started, identified by pid so it can be stopped from another process."""

    name: str
    pid: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; the whole process group, so children go too."""
        terminate(self.pid, timeout)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "log": str(self.log)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Process:
        return cls(name=str(data["name"]), pid=int(str(data["pid"])), log=Path(str(data["log"])))


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """Start ``argv`` in a new session (so it outlives a CLI and can be stopped as a group)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                user=user,
                group=user,
                env=env,
                cwd=cwd,
            )
        except FileNotFoundError as exc:
            raise StartupError(f"{name}: executable {argv[0]!r} not found ({exc})") from exc
    return Process(name=name, pid=popen.pid, log=log, popen=popen)


def wait_until(
    process: Process,
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until true; fail fast if the process dies, and clearly at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise StartupError(
                f"{process.name} exited before {what} (is the port busy, or the data dir in use?); "
                f"log {process.log}:\n{log_tail(process.log)}"
            )
        try:
            if ready():
                return
        except Exception:  # readiness probes fail in many ways while a server boots
            pass
        time.sleep(interval)
    process.stop()
    raise StartupError(
        f"{process.name} did not become ready ({what}) within {timeout:.0f}s; stopped it. "
        f"Log {process.log}:\n{log_tail(process.log)}"
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def terminate(pid: int, timeout: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            pgid = os.getpgid(pid)
            if pgid == pid:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def build_cached(script: Path, what: str, timeout: float = 3000) -> Path:
    """Run one of the cached-build scripts (file-locked; a cache hit is instant) and return the
    path it prints last. ``what`` names the build in errors ("the Vault binary")."""
    try:
        out = subprocess.run(
            ["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True, timeout=timeout
        )
    except subprocess.CalledProcessError as exc:
        raise StartupError(
            f"building {what} failed (exit {exc.returncode}); see the lines above, fix, and run "
            "again"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise StartupError(f"building {what} took over {timeout:.0f}s") from exc
    return Path(out.stdout.strip().splitlines()[-1])


def kubectl_cache(kubeconfig: Path) -> Path:
    """Where kubectl keeps its discovery cache for a local API server: beside its kubeconfig, so
    it goes with the stack. (kubectl's default, ``~/.kube/cache``, keeps a directory per
    ``host_port`` for ever, and every local API server listens on a new port.)"""
    return kubeconfig.parent / "kubectl-cache"


def run_kubectl(
    kubectl: Path, kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 90
) -> str:
    """kubectl's output for ``args`` against ``kubeconfig``; a failure raises
    :class:`StartupError` with kubectl's own message."""
    result = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            f"--cache-dir={kubectl_cache(kubeconfig)}",
            *args,
        ],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise StartupError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
