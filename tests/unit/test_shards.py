"""Shards and Leases: the pure decisions of ferry.domain.shards, and the `leader` settings.

The Lease protocol itself (two replicas, a real API server) is tested in
tests/integration/test_leases.py and, with two `ferry run` processes, tests/integration/test_ha.py.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.domain import kinds
from ferry.domain.shards import (
    FLAGS_SHARD,
    LeaseRecord,
    Observation,
    claim,
    handed_over,
    handover_target,
    handover_wanted,
    holder_deadline,
    lease_name,
    lease_seconds,
    live_holder,
    may_acquire,
    observe,
    released,
    renewed,
    requested,
    shard_of,
    shard_of_key,
)
from ferry.settings import LeaderSettings, SettingsError

ME, OTHER, THIRD = "ferry-7d9f-abcde_1", "ferry-7d9f-fghij_1", "ferry-7d9f-klmno_1"


def held_by(holder: str, since: float = 100.0, duration: int = 15) -> Observation:
    return Observation(LeaseRecord(holder, duration, 1, "t0", "t1"), "42", since)


# ----------------------------------------------------------------------------- which shard
def test_a_namespaces_shard_never_changes_between_versions_or_processes() -> None:
    # Pinned: a different hash would move namespaces between replicas during a rolling update.
    assert [shard_of(ns, 16) for ns in ("default", "kube-system", "payments", "team-a")] == [
        13,
        1,
        0,
        4,
    ]
    assert shard_of("payments-prod", 2) == 1


@given(st.text(min_size=1, max_size=63), st.integers(min_value=1, max_value=64))
def test_the_shard_is_the_documented_formula(namespace: str, shards: int) -> None:
    digest = hashlib.sha256(namespace.encode("utf-8", "surrogatepass")).digest()
    assert shard_of(namespace, shards) == int.from_bytes(digest[:8], "big") % shards
    assert shard_of(namespace, 1) == 0


def test_namespaces_spread_evenly_over_shards() -> None:
    counts = Counter(shard_of(f"team-{i}", 4) for i in range(10_000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(2_300 < n < 2_700 for n in counts.values()), counts


def test_entries_go_by_their_source_namespace_flags_all_to_one_shard() -> None:
    namespaces = [f"ns-{i}" for i in range(50)]
    entry_shards = {shard_of_key(kinds.CONFIG_ENTRY.kind, ns, 4) for ns in namespaces}
    assert entry_shards == {0, 1, 2, 3}
    for ns in namespaces:
        assert shard_of_key(kinds.CONFIG_ENTRY.kind, ns, 4) == shard_of(ns, 4)
        assert shard_of_key(kinds.CONFIG_SCHEMA.kind, ns, 4) == shard_of(ns, 4)
        assert shard_of_key(kinds.FEATURE_FLAG.kind, ns, 4) == FLAGS_SHARD
        assert shard_of_key(kinds.FLAG_SET, ns, 4) == FLAGS_SHARD


def test_lease_names_carry_the_shard_count() -> None:
    assert lease_name("ferry", 1, 2) == "ferry-shard-1-of-2"
    assert lease_name("ferry", 1, 2) != lease_name("ferry", 1, 3)


# ----------------------------------------------------------------------------- expiry
def test_a_renewal_restarts_the_observers_clock_a_handover_request_does_not() -> None:
    first = observe(None, LeaseRecord(OTHER, 15, 0, "a", "r1"), "1", now=10.0)
    assert first.since == 10.0
    same = observe(first, LeaseRecord(OTHER, 15, 0, "a", "r1"), "1", now=14.0)
    assert same.since == 10.0
    asked = observe(same, requested(LeaseRecord(OTHER, 15, 0, "a", "r1"), ME), "2", now=16.0)
    assert asked.since == 10.0 and asked.resource_version == "2"
    renewal = observe(asked, LeaseRecord(OTHER, 15, 0, "a", "r2"), "3", now=18.0)
    assert renewal.since == 18.0


def test_a_lease_is_held_until_its_term_is_a_whole_duration_old_on_the_observers_clock() -> None:
    observation = held_by(OTHER, since=100.0, duration=15)
    assert live_holder(observation, 114.9) == OTHER
    assert live_holder(observation, 115.0) is None
    # The renew time written in the Lease (another machine's wall clock) plays no part.
    assert live_holder(Observation(LeaseRecord(OTHER, 15, 0, "", "1999"), "1", 100.0), 101) == OTHER


def test_released_and_missing_leases_are_free_at_once() -> None:
    gone = Observation(released(LeaseRecord(OTHER, 15, 3, "a", "b"), "c"), "7", since=50.0)
    assert live_holder(gone, 50.0) is None
    assert may_acquire(gone, ME, 50.0, held=0, patience=5)
    missing = Observation(None, None, since=50.0)
    assert may_acquire(missing, ME, 50.0, held=0, patience=5)


def test_a_replica_takes_its_own_lease_back_at_once() -> None:
    # A restarted container with the pod's name and pid as identity: no need to wait it out.
    assert may_acquire(held_by(ME, since=100.0), ME, 100.5, held=0, patience=5)


def test_a_live_lease_of_another_replica_is_never_taken() -> None:
    assert not may_acquire(held_by(OTHER, since=100.0), ME, 114.0, held=0, patience=5)


def test_a_replica_already_holding_shards_lets_an_idle_one_go_first() -> None:
    expired = held_by(OTHER, since=100.0, duration=15)  # free from 115
    assert may_acquire(expired, ME, 115.0, held=0, patience=5)
    assert not may_acquire(expired, ME, 119.9, held=1, patience=5)
    assert may_acquire(expired, ME, 120.0, held=1, patience=5)
    assert not may_acquire(expired, ME, 124.9, held=2, patience=5)


@given(
    sent=st.floats(min_value=0, max_value=1e6),
    seen_after=st.floats(min_value=0, max_value=60),
    renew=st.floats(min_value=0.1, max_value=20),
    factor=st.floats(min_value=3, max_value=10),
    probe=st.floats(min_value=0, max_value=200),
)
def test_never_two_holders_a_holder_stops_before_anyone_may_take_over(
    sent: float, seen_after: float, renew: float, factor: float, probe: float
) -> None:
    """The holder sent its last successful renewal at ``sent``; an observer saw it at
    ``sent + seen_after`` (never earlier). At no instant does the holder still hold while the
    observer may take the Lease, whatever the observer holds itself."""
    duration = renew * factor
    deadline = holder_deadline(sent, duration, renew)
    written = lease_seconds(duration)  # what the holder writes in leaseDurationSeconds
    observation = Observation(
        LeaseRecord(OTHER, written, 0, "a", "r"), "1", since=sent + seen_after
    )
    now = sent + probe
    holder_holds = now < deadline
    for held in (0, 1, 3):
        if may_acquire(observation, ME, now, held=held, patience=renew):
            assert not holder_holds
    # ...and the margin between the two is at least a renewal period.
    assert (sent + seen_after + written) - deadline >= renew - 1e-9


# ----------------------------------------------------------------------------- records
def test_claiming_counts_transitions_like_client_go() -> None:
    new = claim(None, ME, 15, "t1")
    assert new == LeaseRecord(ME, 15, 0, "t1", "t1")
    taken = claim(LeaseRecord(OTHER, 15, 4, "t0", "t0"), ME, 15, "t2")
    assert (taken.holder, taken.transitions, taken.acquire_time) == (ME, 5, "t2")
    again = claim(LeaseRecord(ME, 15, 4, "t0", "t1", handover_to=OTHER), ME, 15, "t3")
    assert (again.transitions, again.acquire_time, again.renew_time) == (4, "t0", "t3")
    assert again.handover_to == ""


def test_renewing_clears_a_declined_request_and_releasing_frees_the_lease() -> None:
    record = LeaseRecord(ME, 15, 2, "t0", "t1", handover_to=OTHER)
    assert renewed(record, "t2") == LeaseRecord(ME, 15, 2, "t0", "t2")
    gone = released(record, "t3")
    assert gone.holder == "" and gone.duration_seconds == 1 and gone.handover_to == ""
    assert gone.transitions == 2


def test_handing_over_names_the_requester_as_holder() -> None:
    given_up = handed_over(LeaseRecord(ME, 15, 2, "t0", "t1", handover_to=OTHER), OTHER, "t2")
    assert given_up == LeaseRecord(OTHER, 15, 3, "t2", "t2")


def test_a_holder_hands_over_only_when_it_keeps_at_least_one_shard() -> None:
    asked = LeaseRecord(ME, 15, 0, "a", "b", handover_to=OTHER)
    assert handover_wanted(asked, ME, held=2) == OTHER
    assert handover_wanted(asked, ME, held=1) is None
    assert handover_wanted(LeaseRecord(ME, 15, 0, "a", "b"), ME, held=3) is None
    assert handover_wanted(LeaseRecord(OTHER, 15, 0, "a", "b", handover_to=ME), ME, 2) is None


def test_an_idle_replica_asks_the_busiest_holder_for_its_highest_shard() -> None:
    now = 101.0
    both = {0: held_by(OTHER), 1: held_by(OTHER)}
    assert handover_target(both, ME, held=0, now=now) == 1
    spread = {0: held_by(OTHER), 1: held_by(THIRD)}
    assert handover_target(spread, ME, held=0, now=now) is None  # nobody holds two more
    three = {0: held_by(OTHER), 1: held_by(OTHER), 2: held_by(OTHER), 3: held_by(ME)}
    assert handover_target(three, ME, held=1, now=now) == 2
    assert handover_target(three, ME, held=2, now=now) is None


def test_one_handover_request_at_a_time_and_none_to_a_dead_holder() -> None:
    pending = Observation(requested(LeaseRecord(OTHER, 15, 0, "a", "b"), THIRD), "9", 100.0)
    assert handover_target({0: held_by(OTHER), 1: pending}, ME, held=0, now=101.0) is None
    expired = {0: held_by(OTHER, since=0.0), 1: held_by(OTHER, since=0.0)}
    assert handover_target(expired, ME, held=0, now=101.0) is None  # taken, not asked for


# ----------------------------------------------------------------------------- settings
def test_leader_settings_defaults_are_client_gos() -> None:
    leader = LeaderSettings()
    assert leader.lease_namespace is None and leader.shards == 1
    assert (leader.lease_duration_seconds, leader.renew_seconds, leader.retry_seconds) == (
        15.0,
        5.0,
        2.0,
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"shards": 2}, "more than one shard needs leader.lease_namespace"),
        (
            {"lease_namespace": "ferry", "renew_seconds": 6.0},
            "leader.renew_seconds (6) is more than a third of leader.lease_duration_seconds (15)",
        ),
        (
            {"lease_namespace": "ferry", "retry_seconds": 6.0, "renew_seconds": 5.0},
            "leader.retry_seconds (6) is longer than leader.renew_seconds (5)",
        ),
        ({"lease_name_prefix": "Ferry_HA"}, "is not a DNS label"),
        ({"shards": 0, "lease_namespace": "ferry"}, "LeaderSettings.shards is 0"),
    ],
)
def test_leader_settings_that_cannot_work_are_refused_naming_the_setting(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LeaderSettings(**values)  # type: ignore[arg-type]
