"""A throwaway PostgreSQL cluster from Debian's packages, on a free loopback port.

``initdb`` and ``postgres`` refuse to run as root, so as root they run as the ``postgres`` user the
Debian package creates, on a data directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ferry.devenv.process import Process, StartupError, free_port, spawn, wait_until

DATABASE = "ferry"


def postgres_bin_dir() -> Path:
    """The newest installed server's bin dir (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    preset = os.environ.get("FERRY_PG_BIN_DIR")
    if preset:
        return Path(preset)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise StartupError(
        "PostgreSQL server binaries (initdb) not found: run `make deps` "
        "(apt-get install postgresql) or set FERRY_PG_BIN_DIR"
    )


def _server_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class Postgres:
    directory: Path
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def pause(self) -> None:
        """Stop the server but keep its data: the database is 'down' until ``resume``."""
        self.process.stop()

    def resume(self, timeout: float = 60) -> None:
        self.process = _run_server(self.directory, self.port, timeout)

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(parent: Path, *, timeout: float = 60) -> Postgres:
    """Start a fresh cluster with a ``ferry`` database.

    Its files live in a new temp dir (removed by ``stop``) because, as root, the server runs as
    ``postgres`` and must reach its data dir, which ``parent`` (say a pytest tmp dir, mode 0700)
    may not allow; ``parent`` only records where it is.
    """
    bin_dir = postgres_bin_dir()
    user = _server_user()
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="ferry-pg-"))
    (parent / "postgres-dir").write_text(str(directory))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            *("-D", str(directory / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
            *("--no-sync", "--locale=C.UTF-8"),
        ],
        user=user,
        group=user,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise StartupError(f"initdb failed (exit {init.returncode}):\n{init.stdout[-2000:]}")
    port = free_port()
    process = _run_server(directory, port, timeout)
    created = subprocess.run(
        [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if created.returncode != 0:
        process.stop()
        shutil.rmtree(directory, ignore_errors=True)
        raise StartupError(f"createdb {DATABASE} failed: {created.stderr.strip()}")
    return Postgres(directory, port, process)


def _run_server(directory: Path, port: int, timeout: float) -> Process:
    bin_dir = postgres_bin_dir()
    settings = {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",  # a throwaway cluster: speed over durability
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    argv = [str(bin_dir / "postgres"), "-D", str(directory / "data"), "-p", str(port)]
    argv += ["-k", str(directory)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    process = spawn("postgres", argv, directory / "postgres.log", user=_server_user())

    def ready() -> bool:
        probe = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
            capture_output=True,
            timeout=5,
            check=False,
        )
        return probe.returncode == 0

    wait_until(process, ready, timeout=timeout, what=f"connections on 127.0.0.1:{port}")
    return process
