"""The placement rules every materialised object follows (ferry.domain.placement)."""

from __future__ import annotations

from ferry.domain import labels as L
from ferry.domain.conditions import sync_conditions
from ferry.domain.placement import (
    FOREIGN,
    Action,
    Desired,
    Observed,
    TargetResult,
    apply_failed,
    conflict,
    decide,
    not_accepting,
    not_found,
)


def desired(data_hash: str = "sha256:new", revision: str = "2") -> Desired:
    return Desired(
        "ConfigMap",
        "team",
        "app",
        {"config.json": "{}"},
        {L.MANAGED_BY: L.MANAGED_BY_FERRY},
        {L.REVISION: revision, L.RENDERED_HASH: data_hash},
    )


def ours(data_hash: str, rendered: str, revision: str = "2") -> Observed:
    return Observed(True, data_hash, {L.REVISION: revision, L.RENDERED_HASH: rendered})


def test_nothing_there_is_written_and_a_delete_by_hand_is_named() -> None:
    assert decide(desired(), None, was_synced=False).action is Action.WRITE
    assert decide(desired(), None, was_synced=False).drift is None
    assert decide(desired(), None, was_synced=True).drift == "deleted by hand"


def test_someone_elses_object_is_never_overwritten() -> None:
    assert decide(desired(), FOREIGN, was_synced=True).action is Action.REFUSE


def test_ours_and_up_to_date_is_kept() -> None:
    decision = decide(desired(), ours("sha256:new", "sha256:new"), was_synced=True)
    assert decision.action is Action.KEEP and decision.drift is None


def test_ours_with_new_content_is_written_without_drift() -> None:
    decision = decide(desired(), ours("sha256:old", "sha256:old", "1"), was_synced=True)
    assert decision.action is Action.WRITE and decision.drift is None


def test_a_hand_edit_is_drift_even_when_the_content_is_unchanged() -> None:
    edited = ours("sha256:edited", "sha256:new")
    assert edited.edited
    decision = decide(desired(), edited, was_synced=True)
    assert decision.action is Action.WRITE and decision.drift == "edited by hand"


def test_stale_annotations_alone_cause_a_write() -> None:
    decision = decide(desired(revision="3"), ours("sha256:new", "sha256:new"), was_synced=True)
    assert decision.action is Action.WRITE and decision.drift is None


def test_status_lines_read_the_same_for_every_kind() -> None:
    assert not_accepting("b", "a", "flags").as_status() == {
        "namespace": "b",
        "synced": False,
        "reason": "NamespaceNotAccepting",
        "message": 'namespace "b" does not accept flags from "a" (label ferry.dev/accept="true" '
        "or annotation ferry.dev/accept-from)",
    }
    assert not_found("x", "app").as_status()["name"] == "app"
    refused = conflict(desired(), "app")
    assert refused.reason == "Conflict" and refused.blocking
    assert 'ConfigMap "app" in namespace "team" exists and was not created by Ferry' in str(
        refused.message
    )
    assert apply_failed("team", "forbidden").blocking
    assert not not_found("x").blocking and not not_accepting("b", "a", "entries").blocking


def conditions(targets: list[TargetResult]) -> dict[str, tuple[str, str]]:
    found = sync_conditions(targets, 3, 7, None, valid="ok", cached="cached", placed="materialised")
    return {c.type: (c.status, c.reason) for c in found}


def test_kstatus_stalled_names_the_first_blocking_target() -> None:
    got = conditions([TargetResult("a", True, "app", 3), conflict(desired(), "app")])
    assert got["Ready"] == ("False", "TargetsNotSynced")
    assert got["Stalled"] == ("True", "Conflict")
    assert got["Reconciling"] == ("False", "AsExpected")


def test_refused_namespaces_neither_stall_nor_unready() -> None:
    got = conditions([TargetResult("a", True, "app", 3), not_accepting("b", "a", "entries")])
    assert got["Ready"] == ("True", "Synced")
    assert got["Stalled"] == ("False", "AsExpected")


def test_an_over_budget_schema_makes_its_entries_too_costly_naming_the_schema() -> None:
    """Stored while the webhook was off (or with compatibility: None), a schema over the cost
    budget is never applied to data; the entry says which schema (issue 11)."""
    import pytest

    from ferry.domain.entry import plan_entry
    from ferry.domain.errors import Invalid

    costly = {"schema": {"type": "object", "properties": {"ids": {"uniqueItems": True}}}}
    with pytest.raises(Invalid) as caught:
        plan_entry(
            "app",
            {"schemaRef": {"name": "ids"}, "data": {"ids": [1, 2]}},
            entries={},
            schemas={"ids": costly},
        )
    assert caught.value.reason == "ValidationTooCostly"
    assert 'spec.schemaRef.name: ConfigSchema "ids": ' in caught.value.message
