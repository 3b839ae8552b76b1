"""Validation in worker processes: off the event loop, bounded per call, fair between namespaces.

The complexity budget (``ferry.domain.jsonschema.budget``) refuses schemas that ask too much work
of every value, but a schema within budget can still ask seconds of work of *large* data (a
thousand-branch ``anyOf`` over every item of a long list), and the domain's checks are pure
Python: run on the operator's event loop, one such validation would stall every admission call,
every reconcile, ``/healthz`` and ``/readyz`` in every namespace (issue 11). So every schema check
and data validation of the webhooks and reconcilers runs here:

* **In worker processes** (``validation.workers``), each a plain ``python`` running
  :func:`serve`. A call sends plain data (specs as dicts, never the operator's lazy index views:
  see :func:`plan_entry`) and gets back the pure function's own result.
* **With a hard wall-clock limit per call** (``validation.timeout_seconds``). A worker that
  overruns is killed (SIGKILL: pure Python or RE2, nothing in it can be interrupted gently) and
  replaced; the call answers ``ValidationTooCostly`` naming the schema, as an over-budget schema
  does, and that verdict is remembered for the same input for a while, so a resync or a restart
  of the same reconcile does not spend the time again.
* **Fair between namespaces**: one namespace holds at most ``workers - 1`` workers at once (one
  when there is a single worker), and waiting namespaces are served in turn, so a tenant flooding
  Ferry with costly input leaves a worker to everybody else.

One exception: an entry check (admission) or plan (reconcile) runs on the calling thread when
the pure function is provably cheap (``ferry.domain.admission.cheap_to_check``: a small entry, a
flat schema; a few milliseconds at worst), as long as that namespace has used at most
:data:`INLINE_SHARE` of the thread in the current second (:class:`Inline`, one per pool: the
admission thread's and the reconcile thread's). A worker round trip costs more than such a call
on a busy machine, and a person waits for both: for the webhook's answer, then for the
ConfigMap. Decisions: docs/decisions/0027-validation-a-property-at-a-time.md (admission),
docs/decisions/0029-cheap-plans-on-the-reconcile-thread.md (reconcile).

The functions of this module mirror the pure ones (``plan_entry``, ``check_schema``,
``check_entry``, ``check_schema_request``) and return the same results. Decision record:
docs/decisions/0018-tenant-isolation.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import io
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ferry.domain import admission
from ferry.domain import entry as domain_entry
from ferry.domain.admission import cheap_to_check
from ferry.domain.entry import EntryPlan, references
from ferry.domain.errors import Invalid, Violation
from ferry.domain.jsonschema import TOO_COSTLY
from ferry.metrics import ENTRY_CHECKS
from ferry.slots import FairSlots

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
DEFAULT_TIMEOUT_SECONDS = 2.0
#: How long a ``ValidationTooCostly`` verdict from a timeout is reused for the same input before
#: the input is tried again (a timeout may have been an overloaded machine, not the input).
VERDICT_SECONDS = 600.0
#: Verdicts kept at most (oldest dropped first).
MAX_VERDICTS = 4096
#: How long a new worker may take to import what it runs (a busy machine, a cold disk).
STARTUP_SECONDS = 120.0
#: How much lower a worker's CPU priority is than the thread's that starts it (``nice``).
NICENESS = 10
#: Nesting sent to a worker at most (see ``_plain``).
MAX_SENT_DEPTH = 300
#: A call that would get less time than this to run is not started at all ("busy").
MIN_RUN_SECONDS = 0.05

#: Seconds of the calling thread one namespace's inline checks may use per second (``Inline``).
INLINE_SHARE = 0.05

_HEADER = struct.Struct(">I")


class Busy(Exception):
    """No worker became free before the caller's deadline: try again later."""


# ------------------------------------------------------------------------------- worker side
def _operations() -> dict[str, Callable[..., Any]]:
    """What a worker may be asked to run: the pure checks, by name."""
    from ferry.domain import admission, entry, jsonschema

    return {
        "plan_entry": entry.plan_entry,
        "check_schema": jsonschema.check_schema,
        "check_entry": admission.check_entry,
        "check_schema_request": admission.check_schema_request,
    }


def _outcome(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """One pure call: ``("ok", result)``, ``("invalid", reason, violations)`` or ``("error",
    text)`` (what :func:`_answer` turns back into the result or the raise). Never raises."""
    try:
        return ("ok", function(*args, **kwargs))
    except Invalid as invalid:
        return ("invalid", invalid.reason, list(invalid.violations))
    except RecursionError:
        return ("error", "is nested too deeply to be checked")
    except Exception as error:  # the pure checks never raise; this is a bug, reported
        return _failed(error)


def _failed(error: Exception) -> tuple[str, str]:
    """A call that could not be answered: its error as an ``("error", text)`` outcome."""
    return ("error", f"{type(error).__name__}: {error}"[:500])


def _run_one(operations: Mapping[str, Callable[..., Any]], request: bytes) -> bytes:
    """One call in the worker: ``(op, args, kwargs)`` in, its :func:`_outcome` out."""
    try:
        op, args, kwargs = pickle.loads(request)
        function = operations[op]
    except Exception as error:
        return pickle.dumps(_failed(error))
    return pickle.dumps(_outcome(function, *args, **kwargs))


def serve(
    stdin: BinaryIO | None = None, stdout: BinaryIO | None = None, niceness: int = NICENESS
) -> None:
    """A worker's main loop: length-prefixed requests on stdin, answers on stdout, until EOF
    (the operator stopped or died: a worker never outlives it)."""
    if stdout is None:
        # Answers go to the real stdout; anything printed by mistake goes to stderr instead.
        stdout = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
    stdin = stdin or sys.stdin.buffer
    # Ctrl-C, or a SIGTERM sent to the operator's whole process group (a shell killing the job,
    # the dev stack stopping it), stops the operator, which then closes our stdin: EOF stops
    # us. Dying first would make every reconcile in flight report its entry as too costly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Below the operator's own process (and the API server's, on a shared machine): a worker
    # burning its whole limit on a tenant's costly input must not take CPU from the event loop
    # that answers everyone else. Between workers, the kernel shares fairly.
    # (The admission pool's workers run at the operator's priority: see ``Isolation.niceness``.)
    with contextlib.suppress(OSError):
        os.nice(niceness)
    operations = _operations()
    stdout.write(_HEADER.pack(0))  # ready: everything is imported, calls are timed from now
    stdout.flush()
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        answer = _run_one(operations, stdin.read(size))
        stdout.write(_HEADER.pack(len(answer)) + answer)
        stdout.flush()


# ------------------------------------------------------------------------------- operator side
class _Answers(pickle.Unpickler):
    """Unpickles a worker's answer, building only the classes an answer is made of.

    A worker handles hostile input; should one ever be subverted, its answer still cannot make
    the operator construct anything else (the "Restricting Globals" recipe of the pickle docs).
    """

    ALLOWED = {
        ("ferry.domain.entry", "EntryPlan"),
        ("ferry.domain.errors", "Violation"),
        ("ferry.domain.secrets", "SecretRef"),
        ("ferry.domain.secrets", "VaultRef"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a worker's answer may not hold {module}.{name}")
        return super().find_class(module, name)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _shape(value: Any) -> type | None:
    """``dict`` for a mapping, ``list`` for a list or tuple, None for anything else. The exact
    types JSON gives are recognised without ``isinstance`` against the ``Mapping`` ABC, which
    is slow, and this runs once per value sent (every validation)."""
    kind = type(value)
    if kind is dict:
        return dict
    if kind is list or kind is tuple:
        return list
    if kind in _SCALARS:
        return None
    if isinstance(value, Mapping):
        return dict
    return list if isinstance(value, list | tuple) else None


def _plain(value: Any) -> Any:
    """A JSON-like value as dicts, lists and scalars (index snapshots and Kopf bodies are
    Mappings of their own), copied iteratively, and cut at :data:`MAX_SENT_DEPTH`.

    pickle recurses, and stops near 500 levels; every check refuses data nested past 64 levels
    and schemas past 160 at its first step, naming the path where that happens, so what lies
    past 300 levels never changes an answer and is replaced by ``{}``.
    """
    shape = _shape(value)
    if shape is None:
        return value
    root: Any = shape()
    stack: list[tuple[Any, Any, int]] = [(value, root, 1)]
    while stack:
        src, dst, depth = stack.pop()
        for key, item in src.items() if type(dst) is dict else enumerate(src):
            child = item
            if (inner := _shape(item)) is not None:
                child = {} if inner is dict or depth >= MAX_SENT_DEPTH else []
                if depth < MAX_SENT_DEPTH:
                    stack.append((item, child, depth + 1))
            if type(dst) is dict:
                dst[key] = child
            else:
                dst.append(child)
    return root


@dataclass(eq=False)  # compared and hashed by identity: kept in a set
class _Worker:
    process: asyncio.subprocess.Process

    async def call(self, request: bytes) -> bytes:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(_HEADER.pack(len(request)) + request)
        await self.process.stdin.drain()
        (size,) = _HEADER.unpack(await self.process.stdout.readexactly(_HEADER.size))
        return await self.process.stdout.readexactly(size)

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(Exception):
            await self.process.wait()


@dataclass(frozen=True)
class Overran:
    """A call that did not finish within its limit (``died``: the worker exited instead)."""

    limit: float
    died: bool = False
    full: bool = True
    """It had the whole per-call limit (not less, because of the caller's deadline)."""


class Inline:
    """How much of the calling thread each namespace's inline checks may take: at most
    :data:`INLINE_SHARE` seconds per second; past that, the namespace's checks go to the
    workers (and their turns) until the next second. So a tenant sending costly-but-cheap
    entries as fast as the API server takes them delays another tenant's answer by at most one
    such check, and uses at most that share of the thread."""

    def __init__(
        self, share: float = INLINE_SHARE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.share = share
        self._clock = clock
        self._used: dict[str, float] = {}
        self._second = clock()

    def allows(self, tenant: str) -> bool:
        if (now := self._clock()) - self._second >= 1.0:
            self._used.clear()  # a new second: everyone's share again (and a bounded dict)
            self._second = now
        return self._used.get(tenant, 0.0) < self.share

    def spend(self, tenant: str, seconds: float) -> None:
        self._used[tenant] = self._used.get(tenant, 0.0) + seconds

    def used(self, tenant: str) -> float:
        """Seconds ``tenant``'s inline checks took in the current second."""
        return self._used.get(tenant, 0.0)

    def run(self, tenant: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function`` (a pure check or plan) on this thread, its time counted to ``tenant``;
        its result or ``Invalid`` comes back as from a worker (:func:`_outcome`,
        :func:`_answer`)."""
        started = time.perf_counter()
        try:
            return _answer(_outcome(function, *args, **kwargs))
        finally:
            self.spend(tenant, time.perf_counter() - started)


@dataclass
class Isolation:
    """A small pool of validation worker processes (see the module docstring)."""

    workers: int = DEFAULT_WORKERS
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    niceness: int = NICENESS
    """How much lower the workers' CPU priority is than the thread's that starts them. The
    reconcilers' pool keeps :data:`NICENESS` (background work, started by the reconcile thread,
    itself below the admission thread: ``ferry.webhooks.thread.RECONCILE_NICENESS``); the
    admission webhooks' pool uses 0: a held ``kubectl apply`` waits for it, and each call is
    bounded by ``timeout_seconds`` anyway."""
    command: Sequence[str] | None = None
    """The worker's command line (default: this Python running :func:`serve`)."""
    inline: Inline | None = None
    """Where cheap entry checks and plans may run on the calling thread; None: every call goes
    to a worker."""
    name: str = "reconcile"
    """Which pool this is in ``ferry_entry_checks_total`` (``admission`` or ``reconcile``)."""
    _slots: FairSlots | None = None
    _idle: asyncio.Queue[_Worker] | None = None
    _all: set[_Worker] = field(default_factory=set)
    _spawning: set[asyncio.Task[None]] = field(default_factory=set)
    _verdicts: collections.OrderedDict[bytes, tuple[float, Overran]] = field(
        default_factory=collections.OrderedDict
    )
    killed: int = 0
    """Workers killed for overrunning (or found dead) since the pool started."""

    def inline_for(
        self,
        tenant: str,
        spec: object,
        bases: Mapping[str, Mapping[str, Any]],
        schemas: Mapping[str, Mapping[str, Any]],
    ) -> Inline | None:
        """This pool's :class:`Inline` if the entry ``spec`` may be checked or planned on the
        calling thread now: provably cheap (``cheap_to_check``), within ``tenant``'s share of
        the thread. None: send it to a worker."""
        inline = self.inline
        if (
            inline is not None
            and isinstance(spec, Mapping)
            and inline.allows(tenant)
            and cheap_to_check(spec, bases, schemas)
        ):
            ENTRY_CHECKS.labels(self.name, "inline").inc()
            return inline
        ENTRY_CHECKS.labels(self.name, "worker").inc()
        return None

    def configure(self, workers: int, timeout_seconds: float) -> None:
        """Set the pool's size and limit; takes effect for workers started from now on."""
        self.workers, self.timeout_seconds = workers, timeout_seconds

    @property
    def per_tenant(self) -> int:
        return max(1, self.workers - 1)

    def start(self) -> None:
        """Start the workers now (otherwise the first call does)."""
        if self._slots is None:
            self._slots = FairSlots(self.workers, self.per_tenant)
            self._idle = asyncio.Queue()
            for _ in range(self.workers):
                self._replace()

    async def settled(self) -> None:
        """Wait until every worker being started (or replaced) is ready."""
        await asyncio.gather(*list(self._spawning))

    async def close(self) -> None:
        for task in list(self._spawning):
            task.cancel()
        await asyncio.gather(*self._spawning, return_exceptions=True)
        for worker in list(self._all):
            assert worker.process.stdin is not None
            worker.process.stdin.close()  # EOF: the worker's loop ends
            await worker.kill()
        self._all.clear()
        self._slots = self._idle = None

    def _replace(self, release: str | None = None) -> None:
        """Start a worker in the background; then give back ``release``'s slot, if any."""
        task = asyncio.get_running_loop().create_task(self._spawn(release), name="ferry-validation")
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _spawn(self, release: str | None = None) -> None:
        delay = 0.5
        while True:
            try:
                command = self.command or (
                    sys.executable,
                    "-c",
                    f"from ferry.reconcile.isolation import serve; serve(niceness={self.niceness})",
                )
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**20,
                )
            except OSError as error:
                logger.error("could not start a validation worker: %s; retrying", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            worker = _Worker(process)
            try:
                assert process.stdout is not None
                async with asyncio.timeout(STARTUP_SECONDS):
                    await process.stdout.readexactly(_HEADER.size)
            except (TimeoutError, asyncio.IncompleteReadError) as error:
                logger.error("a validation worker did not start (%r); retrying", error)
                await worker.kill()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._all.add(worker)
            assert self._idle is not None and self._slots is not None
            self._idle.put_nowait(worker)
            if release is not None:
                self._slots.release(release)
            return

    async def run(
        self,
        op: str,
        *args: Any,
        tenant: str,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> tuple[str, Any] | Overran:
        """Run ``op`` in a worker: its answer, or :class:`Overran` if it took too long.

        ``deadline`` (the event loop's clock) bounds the whole call, waiting included: a caller
        that must answer by then (an admission request) gets :class:`Busy` if no worker is free
        in time. Without one the call waits its turn, and runs for the full limit.
        """
        request = pickle.dumps((op, _plain(args), _plain(kwargs)))
        key = hashlib.sha256(request).digest()
        if (known := self._verdict(key)) is not None:
            return known
        self.start()
        assert self._slots is not None and self._idle is not None
        loop = asyncio.get_running_loop()

        def waiting() -> float | None:  # how long the call may still wait for a worker
            return None if deadline is None else max(0.0, deadline - loop.time() - MIN_RUN_SECONDS)

        try:
            await self._slots.acquire(tenant, waiting())
        except TimeoutError:
            raise Busy(op) from None
        try:
            async with asyncio.timeout(waiting()):
                worker = await self._idle.get()
        except TimeoutError:
            self._slots.release(tenant)
            raise Busy(op) from None
        limit = self.timeout_seconds
        if deadline is not None:
            limit = min(limit, deadline - loop.time())
        try:
            async with asyncio.timeout(limit):
                answer = await worker.call(request)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as error:
            died = not isinstance(error, TimeoutError)
            await self._discard(worker, op, tenant, limit, died)
            overran = Overran(limit, died, full=limit >= self.timeout_seconds)
            if overran.full:
                self._remember(key, overran)
            return overran
        except BaseException:
            # Cancelled mid-call (the caller went away): the worker's state is unknown.
            await self._discard(worker, op, tenant, limit, False)
            raise
        self._idle.put_nowait(worker)
        self._slots.release(tenant)
        loaded = _Answers(io.BytesIO(answer)).load()
        return tuple(loaded)  # type: ignore[return-value]

    async def _discard(
        self, worker: _Worker, op: str, tenant: str, limit: float, died: bool
    ) -> None:
        self.killed += 1
        self._all.discard(worker)
        if died:
            logger.warning("validation worker died during %s for namespace %s", op, tenant)
        else:
            logger.warning(
                "validation worker killed: %s for namespace %s ran over %.3gs", op, tenant, limit
            )
        await worker.kill()
        # The tenant's slot stays taken until the new worker is ready: otherwise the next call
        # of the same tenant would take the other worker, and a second namespace would wait for
        # the replacement to start, the cost of the first namespace's overrun.
        self._replace(release=tenant)

    def _verdict(self, key: bytes) -> Overran | None:
        found = self._verdicts.get(key)
        if found is None:
            return None
        if time.monotonic() - found[0] > VERDICT_SECONDS:
            del self._verdicts[key]
            return None
        return found[1]

    def _remember(self, key: bytes, overran: Overran) -> None:
        self._verdicts[key] = (time.monotonic(), overran)
        while len(self._verdicts) > MAX_VERDICTS:
            self._verdicts.popitem(last=False)


#: The reconcilers' pool (the admission webhooks have one of their own: ferry.webhooks.thread).
#: Cheap plans run on the reconcile thread (decision 0029).
POOL = Isolation(inline=Inline())


def configure(workers: int, timeout_seconds: float) -> None:
    POOL.configure(workers, timeout_seconds)


def start() -> None:
    POOL.start()


async def close() -> None:
    await POOL.close()


# ------------------------------------------------------------------------------- what it runs
def _too_costly(overran: Overran, what: str) -> str:
    """The message of a call that overran its whole limit, or whose worker died."""
    if overran.died:
        return f"{TOO_COSTLY}: the validation worker died while {what}"
    return (
        f"{TOO_COSTLY}: {what} took longer than {overran.limit:g}s, the limit for one "
        "validation (setting validation.timeout_seconds); it was stopped"
    )


def _busy(what: str) -> Violation:
    """A request that could not be answered in time for waiting its turn: not a verdict on the
    input, so neither ``ValidationTooCostly`` nor remembered."""
    return Violation(
        "spec",
        f"could not be checked in time: Ferry's validation workers are busy ({what}); try again",
    )


def _overran(schema: str | None, overran: Overran, what: str) -> Violation:
    if not overran.full and not overran.died:
        return _busy(what)
    if schema is None:
        return Violation("spec", _too_costly(overran, what))
    return Violation(
        "spec.schemaRef.name", f'ConfigSchema "{schema}": {_too_costly(overran, what)}'
    )


def with_bases(
    name: str, spec: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The specs of every entry ``spec`` inherits from, transitively, that ``entries`` holds:
    all that resolving entry ``name`` reads of its namespace (``entries`` may be a lazy view of
    an index; only these names are looked up)."""
    found: dict[str, Mapping[str, Any]] = {}
    pending, seen = list(references(spec)[1]), {name}
    while pending:
        base = pending.pop()
        if base in seen:
            continue
        seen.add(base)
        base_spec = entries.get(base)
        if isinstance(base_spec, Mapping):
            found[base] = base_spec
            pending.extend(references(base_spec)[1])
    return found


def _schema_of(
    spec: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]]
) -> tuple[str | None, dict[str, Mapping[str, Any]]]:
    schema, _ = references(spec)
    found = schemas.get(schema) if schema is not None else None
    return schema, ({schema: found} if schema is not None and found is not None else {})


def _answer(answer: tuple[str, Any]) -> Any:
    """A worker's answer as the pure function gave it: its result, or its ``Invalid`` raised."""
    if answer[0] == "ok":
        return answer[1]
    if answer[0] == "invalid":
        raise Invalid(answer[1], answer[2])
    raise Invalid("Malformed", [Violation("spec", f"could not be checked: {answer[1]}")])


class PlanMemo:
    """The last plan of each entry, with the question that produced it.

    ``plan_entry`` is pure: asked the very same question (spec, the specs of its bases and
    schema, Vault prefixes, namespace; compared by value) it gives the very same plan, so that
    plan is reused instead of asking a worker again. A reconcile that changes nothing the plan
    reads (a secret rotation, a resync, a restart, a new target namespace) then costs no worker
    round trip. Bounded: least recently used entries are dropped first.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._plans: collections.OrderedDict[tuple[str, str], tuple[Any, EntryPlan]] = (
            collections.OrderedDict()
        )

    def get(self, key: tuple[str, str], question: Any) -> EntryPlan | None:
        found = self._plans.get(key)
        if found is None or found[0] != question:
            return None
        self._plans.move_to_end(key)
        return found[1]

    def put(self, key: tuple[str, str], question: Any, plan: EntryPlan) -> None:
        self._plans[key] = (question, plan)
        self._plans.move_to_end(key)
        while len(self._plans) > self._size:
            self._plans.popitem(last=False)


PLANS = PlanMemo()


async def plan_entry(
    name: str,
    spec: Mapping[str, Any],
    *,
    entries: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
    vault_paths: Sequence[str] = (),
    namespace: str = "",
    pool: Isolation | None = None,
    memo: PlanMemo | None = None,
) -> EntryPlan:
    """``ferry.domain.entry.plan_entry`` in a worker: the same plan, or the same ``Invalid``;
    ``Invalid("ValidationTooCostly", …)`` naming the schema if it ran over the limit.
    ``memo``: where an unchanged question finds its earlier plan (None: ask the worker)."""
    schema, schema_specs = _schema_of(spec, schemas)
    bases = with_bases(name, spec, entries)
    question = (spec, bases, schema_specs, tuple(vault_paths))
    if memo is not None and (known := memo.get((namespace, name), question)) is not None:
        return known
    pool = pool or POOL
    options = {"entries": bases, "schemas": schema_specs, "vault_paths": tuple(vault_paths)}
    if (inline := pool.inline_for(namespace, spec, bases, schema_specs)) is not None:
        # Plain copies, as a worker receives them: the plan (remembered, written, cached) must
        # share no nested value with an index view or a Kopf body. The schemas are not copied:
        # nothing of them reaches a plan, and an indexed one is frozen, its canonical text
        # remembered on it (decision 0033).
        spec_copy, bases_copy = _plain((spec, bases))
        plan = inline.run(
            namespace,
            domain_entry.plan_entry,
            name,
            spec_copy,
            **{**options, "entries": bases_copy},
            namespace=namespace,
        )
    else:
        answer = await pool.run(
            "plan_entry", name, spec, **options, namespace=namespace, tenant=namespace
        )
        if isinstance(answer, Overran):
            violation = _overran(schema, answer, "validating this entry")
            raise Invalid(TOO_COSTLY, [violation])
        plan = _answer(answer)
    assert isinstance(plan, EntryPlan)
    if memo is not None:
        memo.put((namespace, name), question, plan)
    return plan


async def check_schema(
    schema: object,
    path: str = "spec.schema",
    *,
    tenant: str,
    name: str | None = None,
    pool: Isolation | None = None,
) -> list[Violation]:
    """``ferry.domain.jsonschema.check_schema`` in a worker; a ``ValidationTooCostly`` violation
    if checking it ran over the limit (``name``: the ConfigSchema's, for the message)."""
    answer = await (pool or POOL).run("check_schema", schema, path, tenant=tenant)
    if isinstance(answer, Overran):  # no deadline: it had the whole limit
        what = f'checking ConfigSchema "{name}"' if name else "checking the schema"
        return [Violation(path, _too_costly(answer, what))]
    return list(_answer(answer))


async def check_entry(
    namespace: str,
    name: str,
    spec: object,
    entries: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
    *,
    vault_paths: Sequence[str] = (),
    min_refresh: float = 0.0,
    deadline: float | None = None,
    pool: Isolation | None = None,
) -> list[Violation]:
    """``ferry.domain.admission.check_entry`` in a worker, answered by ``deadline``; on this
    thread instead if the pool allows inline checks and this one is cheap (module docstring)."""
    bases: dict[str, Mapping[str, Any]] = {}
    schema: str | None = None
    schema_specs: dict[str, Mapping[str, Any]] = {}
    pool = pool or POOL
    if isinstance(spec, Mapping):
        bases = with_bases(name, spec, entries)
        schema, schema_specs = _schema_of(spec, schemas)
    args = (namespace, name, spec, bases, schema_specs)
    options = {"vault_paths": tuple(vault_paths), "min_refresh": min_refresh}
    if (inline := pool.inline_for(namespace, spec, bases, schema_specs)) is not None:
        return list(inline.run(namespace, admission.check_entry, *args, **options))
    try:
        answer = await pool.run(
            "check_entry", *args, **options, tenant=namespace, deadline=deadline
        )
    except Busy:
        return [_busy("checking this entry")]
    if isinstance(answer, Overran):
        return [_overran(schema, answer, "validating this entry")]
    return list(_answer(answer))


def _users(schema: str, entries: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Every entry that names ConfigSchema ``schema``, with every base it inherits from."""
    found: dict[str, Mapping[str, Any]] = {}
    for entry_name, spec in entries.items():
        if isinstance(spec, Mapping) and references(spec)[0] == schema:
            found[entry_name] = spec
            found.update(with_bases(entry_name, spec, entries))
    return found


async def check_schema_request(
    operation: str | None,
    namespace: str,
    name: str,
    new_spec: object,
    old_spec: object,
    entries: Mapping[str, Mapping[str, Any]],
    *,
    deadline: float | None = None,
    pool: Isolation | None = None,
) -> list[Violation]:
    """``ferry.domain.admission.check_schema_request`` in a worker, answered by ``deadline``.

    The schemas stored "today" are not needed: the request's own ``oldObject`` is what the
    compatibility check compares with, and entries only ever use their own schema.
    """
    users = _users(name, entries) if operation == "UPDATE" else {}
    try:
        answer = await (pool or POOL).run(
            "check_schema_request",
            operation,
            namespace,
            name,
            new_spec,
            old_spec,
            users,
            {},
            tenant=namespace,
            deadline=deadline,
        )
    except Busy:
        return [_busy("checking this schema")]
    if isinstance(answer, Overran):
        count = sum(1 for spec in users.values() if references(spec)[0] == name)
        what = f'checking ConfigSchema "{name}" against the {count} entries that use it'
        if not answer.full and not answer.died:
            return [_busy(what)]
        return [Violation("spec.schema", _too_costly(answer, what))]
    return list(_answer(answer))
