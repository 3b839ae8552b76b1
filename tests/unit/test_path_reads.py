"""How reads of one Vault path are shared (ferry.adapters.vault_reads.PathReads), with a reader that
counts calls: the sharing rules, not Vault itself (tests/integration/test_vault_adapter.py)."""

from __future__ import annotations

import pytest

from ferry.adapters.vault import SecretVersion, VaultUnavailable
from ferry.adapters.vault_reads import PathReads


class Reader:
    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    async def read(self, path: str, version: int | None = None) -> SecretVersion:
        self.calls += 1
        if self.down:
            raise VaultUnavailable("Vault is down", path=path)
        return SecretVersion(path, self.calls, "now", {"k": "v"})


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_finished_read_is_shared_until_it_is_older_than_max_age() -> None:
    reader, clock = Reader(), Clock()
    reads = PathReads(reader, max_age=60, clock=clock)
    await reads.read("a")
    clock.now += 59
    await reads.read("a")
    assert reader.calls == 1
    clock.now += 2
    await reads.read("a")
    assert reader.calls == 2


async def test_after_vault_was_down_the_next_caller_asks_again() -> None:
    reader, clock = Reader(), Clock()
    reads = PathReads(reader, max_age=60, clock=clock)
    reader.down = True
    first = await reads.resolve([])  # nothing to read: no call
    assert first.ok and reader.calls == 0
    with pytest.raises(VaultUnavailable):
        await reads.read("a")
    reader.down = False
    assert (await reads.read("a")).version == 2  # not the cached failure


async def test_a_refresh_needs_a_read_started_after_it_was_asked_for() -> None:
    reader, clock = Reader(), Clock()
    counted: list[int] = []
    reads = PathReads(reader, max_age=60, clock=clock, on_read=lambda: counted.append(1))
    await reads.read("a")  # started at 100
    clock.now = 105
    assert (await reads.read("a", not_before=103)).version == 2  # asked at 103: new read
    clock.now = 106
    assert (await reads.read("a", not_before=104)).version == 2  # the read at 105 serves it
    assert reader.calls == 2 and len(counted) == 2


async def test_a_read_finding_a_new_latest_version_says_so_once() -> None:
    reader, clock = Reader(), Clock()  # each read answers a newer version than the last
    rotated: list[str] = []
    reads = PathReads(reader, max_age=60, clock=clock, on_new_version=rotated.append)
    await reads.read("a")
    assert rotated == []  # the first read of a path is not a rotation
    await reads.read("a")  # shared: no read, nothing new
    assert rotated == []
    await reads.read("a", not_before=clock.now + 1)
    assert rotated == ["a"]
    await reads.read("a", version=1)  # a pinned version never rotates
    assert rotated == ["a"]
    reader.calls = 1  # the next read answers version 2 again, the one seen last: unchanged
    await reads.read("a", not_before=clock.now + 2)
    assert rotated == ["a"]
