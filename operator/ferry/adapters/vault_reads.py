"""Vault reads shared between entries: at most one read per distinct (path, version) while its
result is fresh, shared by every entry that uses the path, failures included.

A path read by a thousand entries costs one request per refresh (the benchmark's goal, "one read
per distinct path per refresh"). A finished read is kept only while it can be reused
(``max_age``), with only the keys callers use, and a bounded number of them: a tenant can make
Ferry read many paths and versions; it cannot make Ferry keep them. The reads themselves go
through any :class:`~ferry.adapters.vault.SecretReader` (the :class:`VaultClient`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from ferry.adapters.vault import (
    Resolution,
    ResolvedValue,
    SecretReader,
    SecretVersion,
    VaultError,
)
from ferry.domain.secrets import SecretRef, secret_bytes

#: Bounds: finished reads kept, bytes of values they keep (estimated), and paths whose latest
#: version and keys in use are remembered between reads.
MAX_KEPT_READS = 4096
MAX_KEPT_BYTES = 64 * 1024 * 1024
MAX_KNOWN_PATHS = 65536


@dataclass(eq=False)
class _Read:
    """One read of a (path, version): its task while in flight; once finished, only what a later
    caller may reuse. The task (the whole secret) is let go as soon as the read ends."""

    started: float
    task: asyncio.Future[SecretVersion] | None
    whole: bool = False  # a caller asked for the whole secret: keep every key
    kept: SecretVersion | None = field(default=None, repr=False)  # the keys in use only
    names: frozenset[str] = field(default=frozenset(), repr=False)  # every key the secret has
    failure: VaultError | None = None
    size: int = 0  # estimated bytes of the values kept

    def serves(self, keys: frozenset[str] | None) -> bool:
        """Whether this finished read answers for ``keys`` (``None``: the whole secret): every
        key is either kept or not in the secret at all (then "no such key" is the answer)."""
        if self.failure is not None:
            return True
        if keys is None:
            return self.whole
        data = self.kept.data if self.kept is not None else {}
        return all(key in data or key not in self.names for key in keys)

    def outcome(self) -> SecretVersion:
        if self.failure is not None:
            # Raised afresh for each caller: no traceback piles up on the shared exception.
            raise self.failure.with_traceback(None)
        assert self.kept is not None
        return self.kept


@dataclass(eq=False)
class _Path:
    """What is remembered of a path between reads: no values."""

    latest: int | None = None  # latest version seen
    keys: set[str] = field(default_factory=set)  # keys callers use (and the secret has)


class PathReads:
    """At most one Vault read per distinct (path, version) while fresh, shared by all callers.

    Make one per refresh pass (default ``max_age``: forever, so a pass reads each path once however
    many entries use it), or keep one with a finite ``max_age`` so entries refreshing close
    together share a read. Concurrent callers of the same path wait for the same read; a failure
    is shared too, so a down Vault or a denied path costs one request, not one per entry.
    A caller being cancelled does not cancel the read the others wait for.

    What is kept, and for how long: a finished read only while it can be reused (``max_age``;
    a retryable failure not at all), dropped when found older on any access; of a secret only
    the keys callers have asked for; at most ``max_reads`` finished reads holding about
    ``max_bytes`` of values, oldest dropped first. Reads in flight are never dropped (their
    callers hold them anyway). Per path, the latest version seen and the names of the keys in
    use are remembered for ``max_paths`` paths, least recently read dropped first.
    """

    def __init__(
        self,
        reader: SecretReader,
        *,
        max_age: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        on_read: Callable[[], None] | None = None,
        on_new_version: Callable[[str], None] | None = None,
        max_reads: int = MAX_KEPT_READS,
        max_bytes: int = MAX_KEPT_BYTES,
        max_paths: int = MAX_KNOWN_PATHS,
    ) -> None:
        self._reader = reader
        self._max_age = max_age
        self._clock = clock
        self._on_read = on_read  # called once per read actually sent (metrics)
        # Called with a path when a read of its latest version finds a newer one than the
        # previous read did: every user of the path, not only the caller, has a new value.
        self._on_new_version = on_new_version
        self._max_reads, self._max_bytes, self._max_paths = max_reads, max_bytes, max_paths
        self._reads: OrderedDict[tuple[str, int | None], _Read] = OrderedDict()  # by start
        self._paths: OrderedDict[str, _Path] = OrderedDict()  # least recently read first
        self._kept_bytes = 0
        self.reads = 0  # reads actually sent

    @property
    def kept(self) -> int:
        """Reads held now, finished or in flight (for tests and metrics)."""
        return len(self._reads)

    async def read(
        self,
        path: str,
        version: int | None = None,
        *,
        keys: Collection[str] | None = None,
        not_before: float | None = None,
        lane: str | None = None,
    ) -> SecretVersion:
        """The secret, from a read shared with other callers when one is usable.

        ``keys``: the keys the caller will use (``None``: all); a result served from an earlier
        read holds those at least. A read in flight is always shared. A finished one is reused
        while younger than ``max_age``, except a retryable failure (Vault down, sealed, slow):
        the next caller asks Vault again, so an outage ends for everyone as soon as Vault is
        back. ``not_before`` (on this object's clock): only a read started at or after that
        moment will do, e.g. one started after a user asked for a refresh. ``lane``: whose read
        it is, passed to the reader for fair turns.
        """
        if isinstance(keys, str):
            keys = (keys,)  # one key, not its characters
        wanted = None if keys is None else frozenset(keys)
        now = self._clock()
        self._drop_expired(now)
        key = (path, version)
        read = self._reads.get(key)
        if read is None or not self._usable(read, wanted, now=now, not_before=not_before):
            read = self._start(key, now, lane)
        self._want(path, read, wanted)
        if read.task is not None:
            return await asyncio.shield(read.task)
        return read.outcome()

    def _usable(
        self, read: _Read, wanted: frozenset[str] | None, *, now: float, not_before: float | None
    ) -> bool:
        if not_before is not None and read.started < not_before:
            return False
        if read.task is not None:
            return True  # in flight: always shared
        return now - read.started <= self._max_age and read.serves(wanted)

    def _start(self, key: tuple[str, int | None], now: float, lane: str | None) -> _Read:
        path, version = key
        # Only a lane given goes to the reader: readers that know none stay usable.
        reading = (
            self._reader.read(path, version)
            if lane is None
            else self._reader.read(path, version, lane=lane)
        )
        read = _Read(now, asyncio.ensure_future(reading))
        self._discard(key)  # a superseded read: delete first, so the order stays by start
        self._reads[key] = read
        assert read.task is not None
        read.task.add_done_callback(functools.partial(self._finish, key, read))
        self.reads += 1
        if self._on_read is not None:
            self._on_read()
        self._drop_over_bounds()
        return read

    def _want(self, path: str, read: _Read, wanted: frozenset[str] | None) -> None:
        """Remember which keys of ``path`` callers use, so the next read keeps those."""
        known = self._path(path)
        if wanted is None:
            read.whole = read.whole or read.task is not None
        elif read.task is not None:
            known.keys |= wanted  # checked against the secret's keys when the read ends
        else:
            known.keys |= wanted & read.names

    def _finish(
        self, key: tuple[str, int | None], read: _Read, task: asyncio.Future[SecretVersion]
    ) -> None:
        """A read ended: keep what later callers may reuse, and let go of the rest."""
        read.task = None
        current = self._reads.get(key) is read
        if task.cancelled():
            self._discard_if(key, read)
            return
        failure = task.exception()  # also marks it retrieved: no "never retrieved" log
        if failure is not None:
            if not isinstance(failure, VaultError) or failure.retryable:
                self._discard_if(key, read)  # never reused: asking again is the point
                return
            failure.__context__ = None  # no hvac exception (with Vault's answer) kept with it
            read.failure = failure.with_traceback(None)
            return
        secret = task.result()
        if key[1] is None:
            self._saw_latest(key[0], secret.version)
        self._keep(key[0], read, secret)
        if current:
            self._kept_bytes += read.size
            self._drop_over_bounds()

    def _keep(self, path: str, read: _Read, secret: SecretVersion) -> None:
        read.names = frozenset(secret.data)
        known = self._path(path)
        known.keys &= read.names  # a key the secret lacks needs no value kept
        keep = read.names if read.whole else known.keys
        data = {k: secret.data[k] for k in keep}
        read.kept = SecretVersion(secret.path, secret.version, secret.created_time, data)
        read.size = sum(len(k) + len(secret_bytes(v)) for k, v in data.items())

    def _saw_latest(self, path: str, version: int) -> None:
        known = self._path(path)
        previous = known.latest
        if version == previous:
            return  # reads of one path are never in flight side by side: this is the newest
        known.latest = version
        if previous is not None and self._on_new_version is not None:
            self._on_new_version(path)

    def _path(self, path: str) -> _Path:
        known = self._paths.get(path)
        if known is None:
            known = self._paths[path] = _Path()
            while len(self._paths) > self._max_paths:
                self._paths.popitem(last=False)
        else:
            self._paths.move_to_end(path)
        return known

    # -- dropping what can no longer be reused

    def _drop_expired(self, now: float) -> None:
        """Finished reads older than ``max_age``: the oldest come first, so stop at a young one."""
        old = itertools.takewhile(
            lambda item: now - item[1].started > self._max_age, self._reads.items()
        )
        for key in [key for key, read in old if read.task is None]:
            self._discard(key)

    def _drop_over_bounds(self) -> None:
        """The oldest finished reads, while there are too many or they keep too many bytes."""
        while len(self._reads) > self._max_reads or self._kept_bytes > self._max_bytes:
            oldest = next((key for key, read in self._reads.items() if read.task is None), None)
            if oldest is None:
                return  # only reads in flight left: their callers hold them anyway
            self._discard(oldest)

    def _discard(self, key: tuple[str, int | None]) -> None:
        read = self._reads.pop(key, None)
        if read is not None:
            self._kept_bytes -= read.size

    def _discard_if(self, key: tuple[str, int | None], read: _Read) -> None:
        if self._reads.get(key) is read:
            self._discard(key)

    def forget(self, path: str | None = None) -> None:
        """Drop finished results (of ``path``, or all): the next read goes to Vault (on-demand
        refresh). Reads in flight stay shared."""
        for key in [k for k in self._reads if path is None or k[0] == path]:
            if self._reads[key].task is None:
                self._discard(key)

    async def resolve(
        self, refs: Iterable[SecretRef], *, not_before: float | None = None, lane: str | None = None
    ) -> Resolution:
        """Resolve every reference of an entry concurrently, one read per (path, version) with
        all the keys the entry uses from it; never raises :class:`VaultError`. ``lane``: the
        entry's namespace (fair turns when Vault reads have to wait)."""
        refs = list(refs)
        wanted: dict[tuple[str, int | None], set[str]] = {}
        for ref in refs:
            wanted.setdefault((ref.vault.path, ref.vault.version), set()).add(ref.vault.key)
        outcomes = await asyncio.gather(
            *(
                self.read(path, version, keys=keys, not_before=not_before, lane=lane)
                for (path, version), keys in wanted.items()
            ),
            return_exceptions=True,
        )
        answers = dict(zip(wanted, outcomes, strict=True))
        values: dict[str, ResolvedValue] = {}
        failures: dict[str, VaultError] = {}
        for ref in refs:
            outcome = answers[(ref.vault.path, ref.vault.version)]
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                value = outcome.value(ref.vault.key)
            except VaultError as error:
                failures[ref.name] = error
                continue
            values[ref.name] = ResolvedValue(ref, outcome.version, secret_bytes(value))
        return Resolution(values, failures)
