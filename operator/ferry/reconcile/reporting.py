"""How reconcilers tell users what happened: status (conditions), Events and the audit trail.

Shared by every kind so that ConfigEntry and FeatureFlag report in exactly the same shape, which is
what `kubectl wait`, Argo CD and Flux read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ferry import metrics
from ferry.adapters.cache import CacheUnavailable
from ferry.adapters.kube import Kube
from ferry.adapters.postgres import Store, StoreUnavailable
from ferry.domain import kinds
from ferry.domain import labels as L
from ferry.domain.conditions import Condition, merge_conditions, progress
from ferry.domain.errors import Invalid
from ferry.reconcile.workqueue import Requeue
from ferry.reconcile.world import Snapshot


class _Remove(enum.Enum):
    FIELD = "remove"


#: A status field value that removes the field (JSON merge patch's null): a status says what is
#: true, so an empty summary is left out rather than written as zeros (decision 0034). A field
#: given as None is left as it is instead.
REMOVE = _Remove.FIELD

# Background reports (Events, audit rows) said while a reconcile runs, sent when it ends.
_held: ContextVar[list[Callable[[], None]] | None] = ContextVar("ferry_held_reports", default=None)


@contextlib.contextmanager
def hold_reports() -> Iterator[None]:
    """Send the Events and audit rows said inside the block only when it ends.

    They describe writes the block makes (a revision recorded, a ConfigMap restored). Sent at
    once, they put an API call and a database round trip on the event loop exactly while those
    writes are on their way; held, the ConfigMap reaches the workload first and the Event
    follows a few milliseconds later. Tasks started inside the block share the hold.
    """
    held: list[Callable[[], None]] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        for send in held:
            send()


async def cache_write(write: Awaitable[None]) -> str | None:
    """Await a Redis write; return why it failed (the condition's message), or None.

    Redis is a cache: a failed write is reported (Cached=False, ``ferry_cache_up`` 0) and
    retried, but never holds back what was already written to the cluster.
    """
    started = time.perf_counter()
    try:
        await write
    except CacheUnavailable as exc:
        metrics.CACHE_UP.set(0)
        metrics.CACHE_ERRORS.inc()
        return str(exc)
    finally:
        metrics.CACHE_SECONDS.observe(time.perf_counter() - started)
    metrics.CACHE_UP.set(1)
    return None


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Source:
    """The Ferry object a report is about."""

    namespace: str
    name: str
    uid: str


#: Per kind: the Event reason for invalid content, and what Ready=False says that means for
#: what the object materialised.
INVALID = {
    kinds.CONFIG_ENTRY.kind: (
        "InvalidConfig",
        "invalid content: nothing materialised; existing objects are untouched",
    ),
    kinds.FEATURE_FLAG.kind: (
        "InvalidFlag",
        "invalid flag: nothing recorded or served; what was served is untouched",
    ),
}


@dataclass
class Reporter:
    kind: str
    kube: Kube
    store: Store
    # Events said once per (uid, reason, detail) while the operator runs, not on every resync.
    _said: set[tuple[str, str, Any]] = field(default_factory=set)
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    # Status fields every status write of this kind carries, computed from the object (a flag's
    # bucketing generation must be written with its first revision, whatever path writes it).
    stamp: Callable[[Snapshot], dict[str, Any]] | None = None
    # uid → (content hash, revision) of the latest revision this process saw committed. The
    # proof that content was recorded comes from PostgreSQL (here, or `store.record`), never
    # from status, which anyone allowed to patch the status subresource can write.
    _recorded: dict[str, tuple[str, int]] = field(default_factory=dict)

    async def status(
        self,
        namespace: str,
        name: str,
        snapshot: Snapshot,
        conditions: list[Condition],
        **fields: Any,
    ) -> None:
        """Patch the status subresource, unless it already says exactly this.

        ``fields`` are extra top-level status fields (revision, hash, targets); None values are
        left out so an earlier value stays (status.hash only ever names a committed revision);
        ``REMOVE`` removes the field.
        """
        current = snapshot.status
        status: dict[str, Any] = {
            "observedGeneration": snapshot.generation,
            "conditions": merge_conditions(current.get("conditions"), conditions, now()),
            **{k: None if v is REMOVE else v for k, v in fields.items() if v is not None},
            **(self.stamp(snapshot) if self.stamp else {}),
        }
        # A field to remove is None here, as an absent one reads: removing what is not there
        # writes nothing (a restart over healthy objects writes no status).
        if all(current.get(k) == v for k, v in status.items()):
            return
        await self.kube.patch_status(self.kind, namespace, name, status)

    def event(
        self,
        namespace: str,
        name: str,
        uid: str,
        type_: str,
        reason: str,
        message: str,
        once_per: Any = None,
    ) -> bool:
        """Record an Event (written in the background: informative, so never a round trip on a
        sync; see ``ferry.adapters.events``).

        With ``once_per``, only the first of its kind while the operator runs is posted; returns
        whether this one was.
        """
        if once_per is not None:
            marker = (uid, reason, once_per)
            if marker in self._said:
                return False
            self._said.add(marker)
        involved = {"kind": self.kind, "name": name, "namespace": namespace, "uid": uid}
        self._later(
            functools.partial(
                self.kube.events.record, involved, type=type_, reason=reason, message=message
            )
        )
        return True

    def audit(
        self,
        action: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        username: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append to the audit trail in the background; PostgreSQL down loses only this row."""

        async def write() -> None:
            with contextlib.suppress(StoreUnavailable):
                await self.store.audit(
                    action,
                    kind=self.kind,
                    namespace=namespace,
                    name=name,
                    uid=uid,
                    username=username,
                    details=details,
                )

        self._spawn(write())

    def drift_corrected(self, source: Source, what: str, drift: str) -> None:
        """``what`` (e.g. "ConfigMap ns/name") was edited or deleted by hand and is restored."""
        message = f"restored {what} {drift}"
        self.event(source.namespace, source.name, source.uid, "Normal", "DriftCorrected", message)
        details = {"target": what, "drift": drift}
        self.audit(
            "drift-corrected", source.namespace, source.name, uid=source.uid, details=details
        )

    def recorded_revision(self, uid: str, content_hash: str) -> int | None:
        """The revision of exactly this content, if this process saw it committed."""
        known = self._recorded.get(uid)
        return known[1] if known is not None and known[0] == content_hash else None

    def forget(self, uid: str) -> None:
        self._recorded.pop(uid, None)

    async def record(
        self,
        namespace: str,
        name: str,
        snapshot: Snapshot,
        content: Any,
        content_hash: str,
        *,
        untouched: str,
    ) -> int:
        """Record-before-materialise: the revision number for ``content``, inserting a new one
        (with the user and reason from the object's annotations) when the content changed.

        PostgreSQL down: status says Recorded=False (``untouched`` tells the user what was left
        alone) and ``Requeue`` retries with backoff.
        """
        if (known := self.recorded_revision(snapshot.uid, content_hash)) is not None:
            return known  # committed earlier in this process: no round trip
        annotations = snapshot.annotations
        try:
            with metrics.STORE_SECONDS.time():
                recorded = await self.store.record(
                    kind=self.kind,
                    namespace=namespace,
                    name=name,
                    uid=snapshot.uid,
                    content=content,
                    spec=snapshot.spec,
                    content_hash=content_hash,
                    changed_by=annotations.get(L.CHANGED_BY),
                    reason=annotations.get(L.CHANGE_REASON),
                )
        except StoreUnavailable as exc:
            valid = Condition("Valid", "True", "Valid", "content is valid", snapshot.generation)
            raise await self._store_down(
                namespace, name, snapshot, exc, "NotRecorded", untouched, before=[valid]
            ) from exc
        metrics.STORE_UP.set(1)
        revision = recorded.revision.revision
        self._recorded[snapshot.uid] = (content_hash, revision)
        if recorded.created:
            metrics.REVISIONS.labels(self.kind).inc()
            message = f"recorded revision {revision} ({content_hash[:19]})"
            self.event(namespace, name, snapshot.uid, "Normal", "RevisionRecorded", message)
        return revision

    async def let_go(self, namespace: str, name: str, snapshot: Snapshot) -> None:
        """The last step of a deletion: its audit row, then our finalizer removed so Kubernetes
        can delete the object.

        The row is what tells history the object is gone: without it `ferry export --at` (and
        the history API's ``current``) would count the object as live and `ferry restore` would
        bring it back. So, as a change waits for its revision (decision 0003), a deletion waits
        for its row: while PostgreSQL is down the finalizer stays, status says why, and the
        deletion is retried with backoff."""
        try:
            await self.store.mark_deleted(
                self.kind,
                namespace,
                name,
                uid=snapshot.uid,
                username=snapshot.annotations.get(L.CHANGED_BY),
            )
        except StoreUnavailable as exc:
            waiting = "deleted once the deletion is recorded in PostgreSQL"
            raise await self._store_down(
                namespace, name, snapshot, exc, "DeletionNotRecorded", waiting
            ) from exc
        self.forget(snapshot.uid)
        if L.FINALIZER in snapshot.finalizers:
            remaining = [f for f in snapshot.finalizers if f != L.FINALIZER]
            await self.kube.set_finalizers(
                self.kind, namespace, name, remaining, snapshot.resource_version
            )

    async def _store_down(
        self,
        namespace: str,
        name: str,
        snapshot: Snapshot,
        error: StoreUnavailable,
        reason: str,
        waiting: str,
        *,
        before: Sequence[Condition] = (),
    ) -> Requeue:
        """PostgreSQL could not record what must be recorded first: counted, and said in status
        (``Recorded=False``; ``Ready=False`` for ``reason``, ``waiting`` telling the user what
        waits meanwhile; Ferry retries by itself). Returns the :class:`Requeue` to raise."""
        metrics.STORE_UP.set(0)
        metrics.STORE_ERRORS.inc()
        generation = snapshot.generation
        conditions = [
            *before,
            Condition("Recorded", "False", "DatabaseUnavailable", str(error), generation),
            Condition("Ready", "False", reason, waiting, generation),
            *progress(reconciling=("DatabaseUnavailable", waiting), generation=generation),
        ]
        await self.status(namespace, name, snapshot, conditions)
        return Requeue(str(error))

    async def hold_on(self, namespace: str, name: str, snapshot: Snapshot) -> None:
        """Add Ferry's finalizer if it is missing (the mutating webhook adds it on create; an
        object stored while the webhook was off gets it here)."""
        if L.FINALIZER not in snapshot.finalizers:
            await self.kube.set_finalizers(
                self.kind,
                namespace,
                name,
                [*snapshot.finalizers, L.FINALIZER],
                snapshot.resource_version,
            )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self._later(functools.partial(self._start, work))

    @staticmethod
    def _later(send: Callable[[], None]) -> None:
        """``send()`` now, or when the enclosing :func:`hold_reports` block ends."""
        if (held := _held.get()) is not None:
            held.append(send)
        else:
            send()

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def invalid(
        self,
        namespace: str,
        name: str,
        snapshot: Snapshot,
        exc: Invalid,
    ) -> None:
        """Valid=False and Ready=False with every violation; an Event and an audit row when the
        message is new (not on every resync)."""
        generation = snapshot.generation
        previous = snapshot.condition("Valid")
        await self.status(
            namespace,
            name,
            snapshot,
            [
                Condition("Valid", "False", exc.reason, exc.message, generation),
                Condition("Ready", "False", exc.reason, INVALID[self.kind][1], generation),
                *progress(stalled=(exc.reason, exc.message), generation=generation),
            ],
        )
        if previous is not None and previous.get("message") == exc.message:
            return
        self.event(namespace, name, snapshot.uid, "Warning", INVALID[self.kind][0], exc.message)
        details = {"reason": exc.reason, "violations": [str(v) for v in exc.violations]}
        self.audit("invalid", namespace, name, uid=snapshot.uid, details=details)
