"""The placement rules every materialised object follows (ferry.domain.placement), who keeps a
flag name in a namespace (ferry.domain.flagset), and how refused targets are summarised."""

from __future__ import annotations

from dataclasses import replace

from ferry.domain import labels as L
from ferry.domain.conditions import sync_conditions
from ferry.domain.flags import parse_flag
from ferry.domain.flagset import Candidate, choose, definition, flag_hash, is_incumbent
from ferry.domain.placement import (
    FOREIGN,
    Action,
    Desired,
    Observed,
    TargetResult,
    apply_failed,
    conflict,
    decide,
    not_found,
    owns,
)
from ferry.domain.targets import (
    MAX_REFUSED_LISTED,
    RefusedTargets,
    refused_changed,
    summarise_refused,
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


def test_a_newer_revision_alone_does_not_rewrite_an_object_whose_data_it_leaves_alone() -> None:
    # A secret rotation makes revision 3; the ConfigMap's data is what revision 2 wrote.
    quiet = replace(desired(revision="3"), provenance=frozenset({L.REVISION}))
    assert decide(quiet, ours("sha256:new", "sha256:new"), was_synced=True).action is Action.KEEP
    # ... but new data, a hand edit or a removed provenance annotation is still written.
    changed = replace(quiet, annotations={L.REVISION: "3", L.RENDERED_HASH: "sha256:newer"})
    assert decide(changed, ours("sha256:new", "sha256:new"), was_synced=True).action is Action.WRITE
    edited = decide(quiet, ours("sha256:edited", "sha256:new"), was_synced=True)
    assert edited.action is Action.WRITE and edited.drift == "edited by hand"
    stripped = Observed(True, "sha256:new", {L.RENDERED_HASH: "sha256:new"})
    assert decide(quiet, stripped, was_synced=True).action is Action.WRITE


def test_status_lines_read_the_same_for_every_kind() -> None:
    assert not_found("x", "app").as_status() == {
        "namespace": "x",
        "name": "app",
        "synced": False,
        "reason": "NamespaceNotFound",
        "message": 'namespace "x" not found',
    }
    assert "name" not in not_found("x").as_status()
    refused = conflict(desired(), "app")
    assert refused.reason == "Conflict" and refused.blocking
    assert 'ConfigMap "app" in namespace "team" exists and was not created by Ferry' in str(
        refused.message
    )
    assert apply_failed("team", "forbidden").blocking
    assert not not_found("x").blocking


def conditions(targets: list[TargetResult]) -> dict[str, tuple[str, str]]:
    found = sync_conditions(targets, 3, 7, None, valid="ok", cached="cached", placed="materialised")
    return {c.type: (c.status, c.reason) for c in found}


def test_kstatus_stalled_names_the_first_blocking_target() -> None:
    got = conditions([TargetResult("a", True, "app", 3), conflict(desired(), "app")])
    assert got["Ready"] == ("False", "TargetsNotSynced")
    assert got["Stalled"] == ("True", "Conflict")
    assert got["Reconciling"] == ("False", "AsExpected")


def test_missing_namespaces_neither_stall_nor_unready() -> None:
    got = conditions([TargetResult("a", True, "app", 3), not_found("b", "app")])
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


# ----------------------------------------------------------------------------- ownership (issue 11)
def test_an_object_is_ours_only_with_every_label_ferry_puts_on_it_for_that_source() -> None:
    wanted = Desired(
        "ConfigMap",
        "team",
        "app",
        {},
        {L.MANAGED_BY: L.MANAGED_BY_FERRY, L.ENTRY_UID: "uid-1"},
        {L.RENDERED_HASH: "sha256:x"},
    )
    assert owns(wanted, {L.MANAGED_BY: L.MANAGED_BY_FERRY, L.ENTRY_UID: "uid-1", "team": "a"})
    assert not owns(wanted, {L.MANAGED_BY: L.MANAGED_BY_FERRY, L.ENTRY_UID: "uid-2"})  # another
    assert not owns(wanted, {L.ENTRY_UID: "uid-1"})  # not marked as Ferry's
    assert not owns(wanted, None)  # no labels at all
    assert Observed(True, "h").uid is None  # unknown until read: the executor reads it first


# ----------------------------------------------------------------------------- flag names
def flag_candidate(ns: str, name: str = "f", uid: str | None = None) -> Candidate:
    flag = parse_flag(name, FLAG)
    return Candidate(ns, name, uid or f"uid-{ns}", definition(flag), 1, flag_hash(FLAG))


FLAG = {"variants": {"on": True, "off": False}, "defaultVariant": "off"}


def test_a_served_flag_keeps_its_name_against_any_newcomer() -> None:
    """First come, first served, as a ConfigMap someone made keeps its name against an entry:
    an alphabetically earlier source, or the namespace's own new flag, is the conflict."""
    served = flag_candidate("zeta")
    listing = {"f": {"namespace": "zeta", "name": "f", "uid": "uid-zeta", "revision": 1}}
    newcomers = [flag_candidate("alpha"), flag_candidate("team")]

    plan = choose("team", [*newcomers, served], listing)

    assert plan.winners["f"] == served
    assert plan.shadowed == {("alpha", "f"): served, ("team", "f"): served}
    # Without an incumbent (a new ConfigMap, or the served flag deleted) the old order decides.
    assert choose("team", newcomers, listing).winners["f"].namespace == "team"
    assert (
        choose("other", [flag_candidate("zeta"), flag_candidate("alpha")], {})
        .winners["f"]
        .namespace
        == "alpha"
    )


def test_a_flag_deleted_and_made_again_is_a_newcomer() -> None:
    listing = {"f": {"namespace": "zeta", "name": "f", "uid": "uid-old"}}
    again = flag_candidate("zeta", uid="uid-new")
    assert not is_incumbent(again, listing["f"])
    plan = choose("other", [again, flag_candidate("alpha")], listing)
    assert plan.winners["f"].namespace == "alpha"


# ----------------------------------------------------------------------------- refused targets
def test_refused_targets_are_counted_and_the_first_few_named() -> None:
    names = [f"ns-{i:04}" for i in range(1500, 0, -1)]
    summary = summarise_refused(names)
    assert summary.count == 1500
    assert summary.first == tuple(f"ns-{i:04}" for i in range(1, MAX_REFUSED_LISTED + 1))
    assert summary.as_status() == {
        "count": 1500,
        "first": list(summary.first),
        "digest": summary.digest,
    }
    assert summary.describe("src") == (
        'namespaces "ns-0001", "ns-0002", "ns-0003", "ns-0004", "ns-0005", "ns-0006", '
        '"ns-0007", "ns-0008", "ns-0009", "ns-0010" and 1490 more do not accept entries from '
        '"src"'
    )
    assert summarise_refused(["b"]).describe("a", "flags") == (
        'namespace "b" does not accept flags from "a"'
    )
    assert summarise_refused([]) == RefusedTargets()


def test_a_refusal_is_news_only_when_the_set_changes() -> None:
    now = summarise_refused(["b", "a", "c"])
    # A resync, or a restart that reads the summary back from status: nothing new to say.
    assert not refused_changed(now.as_status(), summarise_refused(["c", "b", "a"]))
    # A namespace more, or one less, even beyond the names listed: news.
    assert refused_changed(now.as_status(), summarise_refused(["a", "b", "c", "d"]))
    assert refused_changed(now.as_status(), summarise_refused(["a", "b"]))
    # First time (no summary in status yet), and when every refusal is gone.
    assert refused_changed(None, now)
    assert refused_changed(now.as_status(), RefusedTargets())
    assert not refused_changed(None, RefusedTargets())
