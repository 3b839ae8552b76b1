"""free_port: a port no one else is handed while the server that asked for it gets going."""

from __future__ import annotations

import subprocess
import sys

from ferry.devenv.process import _ephemeral_range, _reserve, free_port

CHILD = """
import sys
from ferry.devenv.process import free_port
ports = [free_port() for _ in range(200)]
print(" ".join(map(str, ports)))
"""


def _ports_of_another_process() -> set[int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {int(port) for port in out.split()}


def test_ports_come_from_outside_the_range_the_kernel_hands_to_connect_and_bind_zero() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert not [port for port in ports if low <= port <= high]


def test_a_port_this_process_holds_is_not_handed_to_another_process() -> None:
    mine = {free_port() for _ in range(200)}
    theirs = _ports_of_another_process()
    assert len(theirs) == 200
    assert not mine & theirs


def test_a_process_that_ended_leaves_its_ports_free_for_others() -> None:
    """No lock files to clean up: the kernel drops a record lock with its process."""
    first = _ports_of_another_process()
    # Not drawing again (draws are random): taking the very ports the ended process held.
    assert all(_reserve(port) for port in sorted(first)[:50])


def test_without_the_lock_file_this_process_still_never_gets_a_port_twice(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """When the shared lock file cannot be opened (another user's), reservations are this
    process's own only; they still hold within it (300 draws repeat some port ≈ 97 % of the time
    without them)."""
    import ferry.devenv.process as process

    monkeypatch.setattr(process, "_lock_file", -1)
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
