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


@dataclass
class Postgres:
    directory: Path
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(parent: Path, *, timeout: float = 60) -> Postgres:
    """Start a fresh cluster. Its files live in a new temp dir (removed by ``stop``) because, as
    root, the server runs as ``postgres`` and must reach its data dir, which ``parent`` (say a
    pytest tmp dir, mode 0700) may not allow; ``parent`` only records where it is."""
    bin_dir = postgres_bin_dir()
    user = "postgres" if os.geteuid() == 0 else None
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="ferry-pg-"))
    (parent / "postgres-dir").write_text(str(directory))
    data = directory / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    log = directory / "postgres.log"
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C.UTF-8",
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
        raise StartupError(f"initdb failed (exit {init.returncode}):\n{init.stdout[-2000:]}")
    port = free_port()
    process = spawn(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(directory),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        log,
        user=user,
    )
    pg_isready = bin_dir / "pg_isready"

    def ready() -> bool:
        probe = subprocess.run(
            [str(pg_isready), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-t", "2"],
            capture_output=True,
            timeout=5,
            check=False,
        )
        return probe.returncode == 0

    wait_until(process, ready, timeout=timeout, what=f"connections on 127.0.0.1:{port}")
    created = subprocess.run(
        [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if created.returncode != 0:
        process.stop()
        raise StartupError(f"createdb {DATABASE} failed: {created.stderr.strip()}")
    return Postgres(directory, port, process)
