"""The ferry-flags plan (who is served where, name collisions) and text → evaluation context."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferry.domain import labels as L
from ferry.domain.flags import evaluate, parse_flag, to_flagd
from ferry.domain.flags.context import BadAttribute, answer_json, parse_attributes
from ferry.domain.flagset import (
    Candidate,
    choose,
    definition,
    flag_content,
    flag_hash,
    parse_listing,
    render,
)

SPEC: dict[str, Any] = {"variants": {"on": True, "off": False}, "defaultVariant": "off"}


def candidate(ns: str, name: str, spec: dict[str, Any] = SPEC, revision: int = 1) -> Candidate:
    flag = parse_flag(name, spec)
    return Candidate(ns, name, f"uid-{ns}-{name}", definition(flag), revision, flag_hash(spec))


def test_content_ignores_target_and_spelled_out_defaults() -> None:
    explicit = {**SPEC, "state": "ENABLED", "targeting": [], "target": {"namespaces": ["x"]}}
    assert flag_hash(explicit) == flag_hash(SPEC)
    assert flag_hash({**SPEC, "defaultVariant": "on"}) != flag_hash(SPEC)
    # A recorded content is itself a spec: a revision can be served again.
    assert parse_flag("f", flag_content(explicit)) == parse_flag("f", SPEC)


def test_bucketing_is_not_content_and_does_not_change_what_is_served() -> None:
    # spec.bucketing picks which provider generation Ferry's own answers match; flags.json is the
    # same for both, so switching it is no new revision (docs/decisions/0014)
    split = {
        **SPEC,
        "targeting": [
            {"split": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}
        ],
    }
    for bucketing in ("flagd-v2", "flagd-v3"):
        pinned = {**split, "bucketing": bucketing}
        assert flag_hash(pinned) == flag_hash(split)
        assert definition(parse_flag("f", pinned)) == definition(parse_flag("f", split))


def test_own_namespace_wins_a_name_collision_then_alphabetical_source() -> None:
    plan = choose("team", [candidate("zeta", "f"), candidate("team", "f"), candidate("alpha", "f")])
    assert plan.winners["f"].namespace == "team"
    assert set(plan.shadowed) == {("zeta", "f"), ("alpha", "f")}

    elsewhere = choose("other", [candidate("zeta", "f"), candidate("alpha", "f")])
    assert elsewhere.winners["f"].namespace == "alpha"
    assert elsewhere.shadowed == {("zeta", "f"): elsewhere.winners["f"]}
    # Order of discovery never matters.
    assert choose("other", [candidate("alpha", "f"), candidate("zeta", "f")]) == elsewhere


def test_render_is_to_flagd_plus_a_listing_of_sources() -> None:
    plan = choose("ns", [candidate("ns", "b"), candidate("src", "a", revision=3)])
    document, data, annotations = render(plan)
    assert document == to_flagd({"a": parse_flag("a", SPEC), "b": parse_flag("b", SPEC)})
    assert json.loads(data["flags.json"]) == document
    listing = parse_listing(annotations)
    assert listing["a"]["namespace"] == "src" and listing["a"]["revision"] == 3
    assert list(listing) == ["a", "b"]
    assert render(choose("ns", [])) == ({}, {}, {})


def test_unreadable_listing_is_empty() -> None:
    assert parse_listing({L.FLAGS_LISTING: "{not json"}) == {}
    assert parse_listing({L.FLAGS_LISTING: "[1]"}) == {}
    assert parse_listing(None) == {}


def test_attributes_are_json_typed_else_strings_and_dots_nest() -> None:
    assert parse_attributes(
        ["plan=pro", "seats=12", "beta=true", 'id="12"', "user.age=40", "user.name=a=b", "x=NaN"]
    ) == {
        "plan": "pro",
        "seats": 12,
        "beta": True,
        "id": "12",
        "user": {"age": 40, "name": "a=b"},
        "x": "NaN",
    }


@pytest.mark.parametrize(
    "pairs", [["novalue"], ["=1"], ["a..b=1"], ["a=1", "a.b=2"], ["a.b=2", "a=1"]]
)
def test_malformed_attributes_are_refused(pairs: list[str]) -> None:
    with pytest.raises(BadAttribute):
        parse_attributes(pairs)


def test_answer_json_carries_variant_value_reason() -> None:
    flag = parse_flag("f", SPEC)
    assert answer_json("ns", "f", evaluate(flag, "k", {}), 4) == {
        "namespace": "ns",
        "flag": "f",
        "variant": "off",
        "value": False,
        "reason": "STATIC",
        "revision": 4,
    }
    answer = answer_json("ns", "f", evaluate(flag, "k", {}, "flagd-v2"), 4, "flagd-v2")
    assert answer["bucketing"] == "flagd-v2"
