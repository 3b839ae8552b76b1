"""Shards and their Leases: which replica reconciles what, decided without I/O or clocks.

Namespaces are divided into ``shards`` by a stable hash of their name; each shard is reconciled
by the one replica that holds its Kubernetes Lease (coordination.k8s.io/v1). With one shard this
is plain leader election. The rules follow client-go's leader election (what controller-runtime,
and so most operators, use), so the Leases read the same in ``kubectl get leases``:

* **Expiry is judged on the observer's clock.** A replica notes *when it first saw* a Lease's
  current term (holder, renew time, transitions); the Lease is free once that term is
  ``leaseDurationSeconds`` old by the same clock. No two machines' wall clocks are compared.
* **A holder gives up before anyone may take over.** It counts its hold from the moment it *sent*
  its last successful renewal and stops reconciling ``duration - renew`` later
  (:func:`holder_deadline`). Any observer saw that renewal after it was sent, so it cannot take
  the Lease earlier than ``duration`` after the send: ``renew`` seconds of margin, during which
  nobody reconciles the shard and certainly not two replicas.
* **Shards spread over replicas.** A replica already holding shards waits a little longer before
  taking a free one (:func:`may_acquire`), so a replica holding none gets it first; and a replica
  holding none asks the busiest holder for one of its shards (:func:`handover_target`), which the
  holder hands over at its next renewal if it holds two or more (:func:`handover_wanted`).

Times in this module are floats from one monotonic clock (``now``), or, inside a
:class:`LeaseRecord`, the RFC 3339 strings written to the Lease for people to read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ferry.domain import kinds

#: The shard whose holder also reconciles every FeatureFlag and ``ferry-flags`` ConfigMap, and
#: runs the cluster-wide chores (history retention). See :func:`shard_of_key`.
FLAGS_SHARD = 0

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def shard_of(namespace: str, shards: int) -> int:
    """The shard of a namespace: the first 8 bytes of SHA-256 of its name, modulo ``shards``.

    Stable across processes, versions and machines (Python's ``hash()`` is salted per process),
    so every replica agrees, and anyone can compute it:
    ``int.from_bytes(hashlib.sha256(b"payments").digest()[:8], "big") % shards``.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    if shards == 1:
        return 0  # every reconcile asks: no hashing when there is nothing to choose
    digest = hashlib.sha256(namespace.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_of_key(kind: str, namespace: str, shards: int) -> int:
    """The shard a work-queue key belongs to.

    ConfigEntries and ConfigSchemas go by their own namespace: an entry writing into other
    namespaces is reconciled where its *source* is, so one replica writes all of its targets.
    FeatureFlags and ``FlagSet`` keys (one namespace's ``ferry-flags``) all go to
    :data:`FLAGS_SHARD`: a namespace's ``ferry-flags`` is one object built from every flag that
    targets it, from any namespace, and the flag reconciler proves each flag's revision from
    what its own process recorded; split over two replicas, each would rebuild a namespace
    without the other's flags, or over a version the other had just written. One writer per
    ``ferry-flags`` keeps it exactly as correct as with one replica (docs/decisions/0020).
    """
    if kind in (kinds.FEATURE_FLAG.kind, kinds.FLAG_SET):
        return FLAGS_SHARD
    return shard_of(namespace, shards)


def lease_name(prefix: str, shard: int, shards: int) -> str:
    """``<prefix>-shard-<i>-of-<n>``: the count is in the name, so replicas configured with
    different counts never share a Lease that would mean different namespaces to each."""
    return f"{prefix}-shard-{shard}-of-{shards}"


def lease_name_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start a Lease name (a DNS label: lower-case letters, digits, '-'),
    or None."""
    if not _DNS_LABEL.match(prefix):
        return f"{prefix!r} is not a DNS label (lower-case letters, digits and '-')"
    if len(prefix) > 40:  # a label (63) with room for "-shard-<i>-of-<n>"
        return f"{prefix!r} is longer than 40 characters"
    return None


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says: its spec, and a pending request to hand the shard over."""

    holder: str = ""
    """``spec.holderIdentity``; empty: released, free for anyone."""
    duration_seconds: int = 0
    """``spec.leaseDurationSeconds``: how long observers wait on an unchanged term."""
    transitions: int = 0
    """``spec.leaseTransitions``: how many times the holder changed."""
    acquire_time: str = ""
    renew_time: str = ""
    handover_to: str = ""
    """A replica holding no shard asks for this one (annotation ``ferry.dev/handover-to``)."""

    @property
    def term(self) -> tuple[str, int, int, str, str]:
        """What every renewal or change of holder changes; a handover request does not."""
        return (
            self.holder,
            self.duration_seconds,
            self.transitions,
            self.acquire_time,
            self.renew_time,
        )


@dataclass(frozen=True)
class Observation:
    """A Lease as one replica last read it, and since when (its clock) that term was unchanged."""

    record: LeaseRecord | None
    """None: no such Lease yet."""
    resource_version: str | None
    since: float


def observe(
    previous: Observation | None,
    record: LeaseRecord | None,
    resource_version: str | None,
    now: float,
) -> Observation:
    """The new observation after reading a Lease at ``now``: ``since`` moves only when the term
    changed (a renewal, another holder, a release), as client-go's ``observedTime`` does."""
    if previous is not None and _term(previous.record) == _term(record):
        return Observation(record, resource_version, previous.since)
    return Observation(record, resource_version, now)


def _term(record: LeaseRecord | None) -> tuple[str, int, int, str, str] | None:
    return None if record is None else record.term


def live_holder(observation: Observation, now: float) -> str | None:
    """Who holds the shard now as far as this observer can tell; None: free to take."""
    record = observation.record
    if record is None or not record.holder:
        return None
    if now >= observation.since + record.duration_seconds:
        return None  # not renewed for a whole lease duration: its holder is gone
    return record.holder


def free_since(observation: Observation) -> float:
    """Since when (observer's clock) the shard has been free, if it is free now."""
    record = observation.record
    if record is None or not record.holder:
        return observation.since
    return observation.since + record.duration_seconds


def may_acquire(
    observation: Observation, identity: str, now: float, held: int, patience: float
) -> bool:
    """Whether this replica, holding ``held`` other shards, should take this shard's Lease now.

    Its own Lease (same identity: a restarted container with the pod's name and pid) is taken
    back at once. A free Lease is taken at once by a replica holding nothing, and after
    ``held * patience`` more seconds by one already holding shards, so that a replica holding
    none gets it first and shards spread without coordination.
    """
    record = observation.record
    if record is not None and record.holder == identity:
        return True
    if live_holder(observation, now) is not None:
        return False
    return now >= free_since(observation) + held * patience


def lease_seconds(duration: float) -> int:
    """``leaseDurationSeconds`` for a configured duration: whole seconds, rounded up, so that
    observers never wait less than the holder counts with (:func:`holder_deadline`)."""
    return max(1, math.ceil(duration))


def holder_deadline(sent_at: float, duration: float, renew: float) -> float:
    """When a holder must stop reconciling a shard if no renewal succeeds first: ``renew``
    seconds before anyone else could take the Lease (see the module's doc). ``sent_at`` is when
    the last successful write of the Lease (acquisition or renewal) was *sent*."""
    return sent_at + duration - renew


def claim(previous: LeaseRecord | None, identity: str, duration: int, now: str) -> LeaseRecord:
    """The record that makes ``identity`` the holder (a new Lease, a free one, or its own)."""
    if previous is not None and previous.holder == identity:
        return dataclasses.replace(
            previous, duration_seconds=duration, renew_time=now, handover_to=""
        )
    transitions = 0 if previous is None else previous.transitions + 1
    return LeaseRecord(identity, duration, transitions, now, now)


def renewed(record: LeaseRecord, now: str) -> LeaseRecord:
    """The holder's renewal (a pending handover request it declines is cleared with it)."""
    return dataclasses.replace(record, renew_time=now, handover_to="")


def released(record: LeaseRecord, now: str) -> LeaseRecord:
    """A clean stop: no holder, so anyone may take it at once (client-go writes the same)."""
    return dataclasses.replace(
        record, holder="", duration_seconds=1, renew_time=now, handover_to=""
    )


def handed_over(record: LeaseRecord, to: str, now: str) -> LeaseRecord:
    """The holder gives the shard to ``to``, which takes it as its own at its next look."""
    return LeaseRecord(to, record.duration_seconds, record.transitions + 1, now, now)


def requested(record: LeaseRecord, identity: str) -> LeaseRecord:
    """``identity`` asks the holder for this shard."""
    return dataclasses.replace(record, handover_to=identity)


def handover_wanted(record: LeaseRecord, identity: str, held: int) -> str | None:
    """Whom the holder ``identity``, holding ``held`` shards, should hand this one to now."""
    wanted = record.handover_to
    if not wanted or wanted == identity or record.holder != identity or held < 2:
        return None
    return wanted


def handover_target(
    observations: Mapping[int, Observation], identity: str, held: int, now: float
) -> int | None:
    """The shard to ask for, if this replica holds two fewer than the busiest other holder.

    Only one request at a time anywhere (a pending one is answered within a renewal), and the
    highest-numbered shard of that holder, so :data:`FLAGS_SHARD` moves only when it must.
    """
    loads: dict[str, list[int]] = {}
    for shard, observation in observations.items():
        holder = live_holder(observation, now)
        if holder is None or holder == identity:
            continue
        if observation.record is not None and observation.record.handover_to:
            return None
        loads.setdefault(holder, []).append(shard)
    if not loads:
        return None
    busiest = max(loads, key=lambda h: (len(loads[h]), h))
    if len(loads[busiest]) - held < 2:
        return None
    return max(loads[busiest])
