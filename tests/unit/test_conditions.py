"""Conditions follow Kubernetes conventions: transition time moves only when status changes."""

from __future__ import annotations

import pytest

from ferry.domain.conditions import Condition, merge_conditions

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-02T00:00:00Z"


def test_new_conditions_get_now() -> None:
    merged = merge_conditions([], [Condition("Ready", "True", "Synced", "all synced", 7)], T0)
    assert merged == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Synced",
            "message": "all synced",
            "observedGeneration": 7,
            "lastTransitionTime": T0,
        }
    ]


def test_unchanged_status_keeps_transition_time_but_updates_the_rest() -> None:
    existing = merge_conditions(None, [Condition("Ready", "True", "Synced", "ok", 1)], T0)
    merged = merge_conditions(existing, [Condition("Ready", "True", "StillSynced", "ok 2", 2)], T1)
    assert merged[0]["lastTransitionTime"] == T0
    assert merged[0]["reason"] == "StillSynced"
    assert merged[0]["message"] == "ok 2"
    assert merged[0]["observedGeneration"] == 2


def test_changed_status_sets_now() -> None:
    existing = merge_conditions([], [Condition("Ready", "True", "Synced", "", 1)], T0)
    merged = merge_conditions(existing, [Condition("Ready", "False", "Invalid", "bad", 2)], T1)
    assert merged[0]["status"] == "False"
    assert merged[0]["lastTransitionTime"] == T1


def test_existing_without_time_gets_now() -> None:
    existing = [{"type": "Ready", "status": "True", "reason": "X", "message": ""}]
    merged = merge_conditions(existing, [Condition("Ready", "True", "X")], T1)
    assert merged[0]["lastTransitionTime"] == T1


def test_order_new_then_other_existing() -> None:
    existing = [
        {"type": "Other", "status": "True", "reason": "A", "lastTransitionTime": T0},
        {"type": "Ready", "status": "False", "reason": "B", "lastTransitionTime": T0},
        {"type": "Extra", "status": "Unknown", "reason": "C", "lastTransitionTime": T0},
    ]
    new = [
        Condition("Valid", "True", "Valid"),
        Condition("Recorded", "True", "Recorded"),
        Condition("Ready", "False", "B"),
    ]
    merged = merge_conditions(existing, new, T1)
    assert [c["type"] for c in merged] == ["Valid", "Recorded", "Ready", "Other", "Extra"]
    assert merged[2]["lastTransitionTime"] == T0
    assert merged[3] == existing[0]


def test_inputs_are_not_mutated() -> None:
    existing = [{"type": "Ready", "status": "True", "reason": "A", "lastTransitionTime": T0}]
    snapshot = [dict(c) for c in existing]
    merge_conditions(existing, [Condition("Ready", "False", "B")], T1)
    assert existing == snapshot


def test_invalid_status_is_refused() -> None:
    with pytest.raises(ValueError, match="condition status"):
        Condition("Ready", "true", "Synced")


def test_huge_message_is_truncated_to_api_limit() -> None:
    [merged] = merge_conditions([], [Condition("Ready", "False", "Invalid", "x" * 100_000)], T0)
    assert len(merged["message"]) == 32768


def test_reconciling_and_stalled_are_present_only_while_true() -> None:
    """kstatus' abnormal-true conditions: False is written as absence, and a stored one that
    has cleared is removed, while every other condition keeps its False."""
    stalled = [
        Condition("Ready", "False", "TargetsNotSynced"),
        Condition("Reconciling", "False", "AsExpected"),
        Condition("Stalled", "True", "Conflict", "team: taken"),
    ]
    merged = merge_conditions([], stalled, T0)
    assert [(c["type"], c["status"]) for c in merged] == [("Ready", "False"), ("Stalled", "True")]
    cleared = [
        Condition("Ready", "True", "Synced"),
        Condition("Reconciling", "False", "AsExpected"),
        Condition("Stalled", "False", "AsExpected"),
    ]
    assert [(c["type"], c["status"]) for c in merge_conditions(merged, cleared, T1)] == [
        ("Ready", "True")
    ]
    working = [Condition("Reconciling", "True", "DatabaseUnavailable", "retrying")]
    again = merge_conditions(merge_conditions(merged, cleared, T1), working, T1)
    assert [(c["type"], c["status"]) for c in again] == [("Reconciling", "True"), ("Ready", "True")]
