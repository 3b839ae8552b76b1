"""What PathReads keeps of Vault's answers, and for how long (ferry.adapters.vault_reads.PathReads).

A reader that hands out values the test can follow with weak references: a value still reachable
after gc is still in the operator's heap. Sharing itself is Vault's side of the story
(tests/integration/test_vault_adapter.py counts reads against a real server).
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from ferry.adapters import vault_reads
from ferry.adapters.vault import (
    SecretNotFound,
    SecretVersion,
    VaultUnavailable,
)
from ferry.adapters.vault_reads import PathReads
from ferry.domain.secrets import SecretRef, parse_secret_data


class Value(dict[str, str]):
    """A secret value (an object, as Vault may hold): unlike a str, it can be followed with a
    weak reference."""

    def __init__(self, text: str) -> None:
        super().__init__(v=text)
        self.text = text


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Reader:
    """Answers every path with fresh ``Value``s for ``keys``; paths in ``missing`` are not found;
    ``down`` makes every read fail as a down Vault would."""

    def __init__(self, keys: tuple[str, ...] = ("k",), missing: tuple[str, ...] = ()) -> None:
        self.keys, self.missing = keys, missing
        self.calls = 0
        self.down = False
        self.handed: list[weakref.ref[Value]] = []
        self.failures: list[weakref.ref[BaseException]] = []

    async def read(self, path: str, version: int | None = None) -> SecretVersion:
        self.calls += 1
        await asyncio.sleep(0)  # a real read is never done at once
        failure: BaseException | None = None
        if self.down:
            failure = VaultUnavailable("Vault is down", path=path)
        elif path in self.missing:
            failure = SecretNotFound(f'no secret at "{path}"', path=path)
        if failure is not None:
            self.failures.append(weakref.ref(failure))
            raise failure
        data = {key: Value(f"{path}:{key}") for key in self.keys}
        self.handed += [weakref.ref(v) for v in data.values()]
        return SecretVersion(path, version or self.calls, "now", data)

    async def alive(self, key: str | None = None) -> int:
        """How many values handed out are still reachable (of ``key`` only, if given)."""
        await settle()
        found = [ref() for ref in self.handed]
        return sum(1 for v in found if v is not None and (key is None or v.text.endswith(key)))

    async def failures_alive(self) -> int:
        await settle()
        return sum(1 for ref in self.failures if ref() is not None)


async def settle() -> None:
    """Collect garbage from a fresh turn of the loop: the callback that resumed the test still
    holds what it resumed it with (a gather's results) until it returns."""
    await asyncio.sleep(0)
    gc.collect()


def refs(path: str, *keys: str, version: int | None = None) -> list[SecretRef]:
    reference = {"path": path, "version": version} if version else {"path": path}
    return parse_secret_data(
        {f"K{i}": {"vault": {**reference, "key": k}} for i, k in enumerate(keys)}
    )


def value_of(secret: SecretVersion, key: str) -> str:
    return str(secret.value(key).text)


async def test_a_finished_read_leaves_the_heap_once_it_can_no_longer_be_reused() -> None:
    reader, clock = Reader(), Clock()
    reads = PathReads(reader, max_age=60, clock=clock)
    resolved = await reads.resolve(refs("team-a/db", "k"))
    assert resolved.ok
    del resolved
    assert await reader.alive() == 1  # still reusable: kept
    clock.now += 61
    await reads.resolve(refs("team-b/db", "k"))  # any later access drops what has expired
    assert await reader.alive() == 1  # team-b's value only
    assert reader.calls == 2


async def test_only_the_keys_callers_use_are_kept() -> None:
    reader, clock = Reader(keys=("used", "spare", "extra")), Clock()
    reads = PathReads(reader, max_age=60, clock=clock)
    resolved = await reads.resolve(refs("team-a/db", "used"))
    assert value_of(await reads.read("team-a/db", keys=["used"]), "used") == "team-a/db:used"
    del resolved
    assert await reader.alive("used") == 1
    assert await reader.alive("spare") == 0 and await reader.alive("extra") == 0
    # a key the secret does not have is answered from what was kept: no new read
    missing = await reads.resolve(refs("team-a/db", "nope"))
    assert missing.failures["K0"].reason == "SecretKeyNotFound"
    assert reader.calls == 1


async def test_entries_using_other_keys_of_a_path_still_share_one_read_per_refresh() -> None:
    reader, clock = Reader(keys=("user", "password")), Clock()
    reads = PathReads(reader, max_age=60, clock=clock)
    users, passwords = refs("shared/db", "user"), refs("shared/db", "password")
    both = await asyncio.gather(reads.resolve(users), reads.resolve(passwords))  # concurrent
    assert all(r.ok for r in both) and reader.calls == 1
    # One refresh later, one entry after the other within the window: the keys in use are
    # remembered (names only), so the first read keeps what the second entry needs.
    clock.now += 3600
    assert (await reads.resolve(users)).ok
    clock.now += 30
    assert (await reads.resolve(passwords)).values["K0"].value == b'{"v":"shared/db:password"}'
    assert reader.calls == 2


async def test_a_tenant_cannot_grow_memory_with_new_pinned_versions_or_missing_paths() -> None:
    """An entry with 64 references, updated again and again with a new pinned ``version``."""
    reader = Reader(missing=tuple(f"gone-{i}" for i in range(64)))
    reads = PathReads(reader)  # no max_age at all: only the bound on its size holds
    rounds = vault_reads.MAX_KEPT_READS // 64 + 8
    for version in range(1, rounds + 1):
        await reads.resolve(
            [r for i in range(64) for r in refs(f"team-a/p{i}", "k", version=version)]
        )
        await reads.resolve([r for i in range(64) for r in refs(f"gone-{i}", "k", version=version)])
    assert reader.calls == 2 * 64 * rounds
    assert await reader.alive() + await reader.failures_alive() <= vault_reads.MAX_KEPT_READS
    assert await reader.alive() < 64 * rounds  # the oldest really went


async def test_a_retryable_failure_is_not_kept_at_all() -> None:
    reader = Reader()
    reads = PathReads(reader, max_age=60, clock=Clock())
    reader.down = True
    failed = await reads.resolve(refs("team-a/db", "k"))
    assert failed.failures["K0"].reason == "VaultUnavailable"
    del failed
    assert await reader.failures_alive() == 0


async def test_bounds_of_count_and_bytes_drop_the_oldest_finished_reads_first() -> None:
    reader, clock = Reader(), Clock()
    reads = PathReads(reader, max_age=60, clock=clock, max_reads=3)
    for name in "abcd":
        await reads.read(name, keys=["k"])
        clock.now += 1
    assert reads.kept == 3
    await reads.read("d", keys=["k"])  # the newest is still shared
    await reads.read("a", keys=["k"])  # the oldest was dropped: read again
    assert reader.calls == 5

    by_bytes = PathReads(Reader(), max_age=60, clock=clock, max_bytes=30)  # ~12 bytes a read
    for name in "abcd":
        await by_bytes.read(f"p/{name}", keys=["k"])
    assert by_bytes.kept == 2


async def test_remembered_paths_are_bounded_and_rotation_is_still_seen() -> None:
    reader, clock = Reader(), Clock()  # each read answers a newer version than the last
    rotated: list[str] = []
    reads = PathReads(reader, max_age=0, clock=clock, on_new_version=rotated.append, max_paths=2)
    for name in ("a", "b", "a", "c", "d"):
        clock.now += 1
        await reads.read(name, keys=["k"])
    assert rotated == ["a"]  # a's second read; c and d pushed a and b out afterwards
    assert len(reads._paths) == 2


async def test_a_read_in_flight_is_never_dropped_and_stays_shared() -> None:
    gate = asyncio.Event()

    class Slow(Reader):
        async def read(self, path: str, version: int | None = None) -> SecretVersion:
            await gate.wait()
            return await super().read(path, version)

    reader, clock = Slow(), Clock()
    reads = PathReads(reader, max_age=1, clock=clock, max_reads=1)
    first = asyncio.ensure_future(reads.read("a", keys=["k"]))
    await asyncio.sleep(0)
    clock.now += 10  # older than max_age, and over the count: still in flight
    others = [asyncio.ensure_future(reads.read(n, keys=["k"])) for n in ("b", "a")]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *others)
    assert reader.calls == 2  # a once, b once


async def test_a_cancelled_caller_leaves_the_shared_read_to_keep_only_what_is_used() -> None:
    reader = Reader(keys=("k", "unused"))
    reads = PathReads(reader, max_age=60, clock=Clock())
    task = asyncio.ensure_future(reads.read("a", keys=["k"]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)  # the shared read goes on and ends
    assert reader.calls == 1 and await reader.alive("unused") == 0
    assert value_of(await reads.read("a", keys=["k"]), "k") == "a:k"
    assert reader.calls == 1
