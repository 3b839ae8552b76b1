"""Inheritance as a user reads it: bases in order, own data last, errors naming the chain."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ferry.domain.errors import Invalid, Violation
from ferry.domain.merge import MAX_INHERITANCE_DEPTH, Resolved, deep_merge, resolve


def spec(data: Any = None, *bases: str) -> dict[str, Any]:
    out: dict[str, Any] = {"inherits": [{"name": b} for b in bases]}
    if data is not None:
        out["data"] = data
    return out


# --- deep_merge -------------------------------------------------------------------------


def test_objects_merge_recursively_and_overlay_wins() -> None:
    base = {"db": {"host": "pg", "poolSize": 10}, "featureX": False}
    overlay = {"db": {"poolSize": 40}, "featureX": True}
    assert deep_merge(base, overlay) == {"db": {"host": "pg", "poolSize": 40}, "featureX": True}


@pytest.mark.parametrize(
    ("base", "overlay", "expected"),
    [
        ({"a": [1, 2, 3]}, {"a": [9]}, {"a": [9]}),  # lists are replaced, not concatenated
        ({"a": {"x": 1}}, {"a": None}, {"a": None}),  # null replaces
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),  # scalar replaces object
        ({"a": 5}, {"a": {"x": 1}}, {"a": {"x": 1}}),  # object replaces scalar
        ({"a": 1}, {}, {"a": 1}),
        ({}, {"a": 1}, {"a": 1}),
    ],
)
def test_non_objects_are_replaced(base: Any, overlay: Any, expected: Any) -> None:
    assert deep_merge(base, overlay) == expected


def test_inputs_are_never_mutated_or_aliased() -> None:
    base = {"a": {"b": [1, {"c": 1}]}, "keep": {"x": 1}}
    overlay = {"a": {"d": {"e": 2}}}
    before = copy.deepcopy((base, overlay))
    merged = deep_merge(base, overlay)
    merged["a"]["b"][1]["c"] = 99
    merged["a"]["d"]["e"] = 99
    merged["keep"]["x"] = 99
    assert (base, overlay) == before


def test_deep_nesting_does_not_hit_recursion_limit() -> None:
    base: dict[str, Any] = {}
    cur = base
    for _ in range(10_000):
        cur["n"] = {}
        cur = cur["n"]
    merged = deep_merge(base, base)
    depth = 0
    while merged:
        merged = merged["n"]
        depth += 1
    assert depth == 10_000


# --- resolve ----------------------------------------------------------------------------


def test_bases_merge_in_order_and_own_data_wins() -> None:
    entries = {
        "payments-api": spec({"db": {"poolSize": 40}}, "defaults", "eu"),
        "defaults": spec({"db": {"poolSize": 10, "host": "pg"}, "region": "us"}),
        "eu": spec({"region": "eu", "db": {"poolSize": 20}}),
    }
    assert resolve("payments-api", entries) == Resolved(
        data={"db": {"poolSize": 40, "host": "pg"}, "region": "eu"},
        bases=("defaults", "eu"),
    )


def test_transitive_bases_are_reported_excluding_self() -> None:
    entries = {"a": spec({"a": 1}, "b"), "b": spec({"b": 1}, "c"), "c": spec({"c": 1})}
    result = resolve("a", entries)
    assert result.data == {"a": 1, "b": 1, "c": 1}
    assert result.bases == ("b", "c")


def test_missing_data_and_inherits_mean_empty() -> None:
    assert resolve("a", {"a": {}}) == Resolved(data={}, bases=())
    assert resolve("a", {"a": {"data": None, "inherits": None}}).data == {}


def test_diamond_is_resolved() -> None:
    entries = {
        "a": spec({"own": 1}, "b", "c"),
        "b": spec({"b": 1}, "d"),
        "c": spec({"c": 1}, "d"),
        "d": spec({"d": 1}),
    }
    assert resolve("a", entries) == Resolved(
        data={"own": 1, "b": 1, "c": 1, "d": 1}, bases=("b", "c", "d")
    )


def test_resolve_does_not_mutate_entries() -> None:
    entries = {"a": spec({"x": {"y": 1}}, "b"), "b": spec({"x": {"z": 2}})}
    before = copy.deepcopy(entries)
    resolve("a", entries).data["x"]["q"] = 1
    assert entries == before


def test_cycle_names_the_chain() -> None:
    entries = {"a": spec({}, "b"), "b": spec({}, "a")}
    with pytest.raises(Invalid) as caught:
        resolve("a", entries)
    assert caught.value.reason == "InheritanceCycle"
    assert caught.value.violations == [Violation("spec.inherits", "inheritance cycle: a → b → a")]


def test_self_inheritance_is_a_cycle() -> None:
    with pytest.raises(Invalid) as caught:
        resolve("a", {"a": spec({}, "a")})
    assert caught.value.violations == [Violation("spec.inherits", "inheritance cycle: a → a")]


def test_cycle_further_down_the_chain() -> None:
    entries = {"a": spec({}, "b"), "b": spec({}, "c"), "c": spec({}, "b")}
    with pytest.raises(Invalid, match="inheritance cycle: a → b → c → b"):
        resolve("a", entries)


def test_missing_base_names_index_and_chain() -> None:
    entries = {"a": spec({}, "ok", "b"), "ok": spec({}), "b": spec({}, "x")}
    with pytest.raises(Invalid) as caught:
        resolve("a", entries)
    assert caught.value.reason == "MissingBase"
    assert caught.value.violations == [
        Violation("spec.inherits[1].name", 'ConfigEntry "x" not found (chain: a → b → x)')
    ]
    assert str(caught.value) == (
        'spec.inherits[1].name: ConfigEntry "x" not found (chain: a → b → x)'
    )


def test_direct_missing_base() -> None:
    with pytest.raises(Invalid) as caught:
        resolve("a", {"a": spec({}, "gone")})
    assert caught.value.violations == [
        Violation("spec.inherits[0].name", 'ConfigEntry "gone" not found (chain: a → gone)')
    ]


def test_depth_is_bounded() -> None:
    n = MAX_INHERITANCE_DEPTH + 5
    entries = {f"e{i}": spec({f"k{i}": i}, f"e{i + 1}") for i in range(n)}
    entries[f"e{n}"] = spec({})
    with pytest.raises(Invalid) as caught:
        resolve("e0", entries)
    assert caught.value.reason == "InheritanceTooDeep"
    [violation] = caught.value.violations
    assert violation.path == "spec.inherits[0].name"
    assert violation.message.startswith(
        f"inheritance is deeper than {MAX_INHERITANCE_DEPTH} levels"
    )


def test_chain_at_the_depth_bound_is_fine() -> None:
    n = MAX_INHERITANCE_DEPTH - 1
    entries = {f"e{i}": spec({"v": i}, f"e{i + 1}") for i in range(n)}
    entries[f"e{n}"] = spec({"v": n, "root": True})
    result = resolve("e0", entries)
    assert result.data == {"v": 0, "root": True}
    assert len(result.bases) == n


def test_wide_diamond_lattice_is_fast() -> None:
    # 30 layers of two entries each inheriting both entries of the next layer: 2**30 paths.
    entries: dict[str, Any] = {}
    for layer in range(30):
        for side in "lr":
            entries[f"{side}{layer}"] = spec(
                {f"{side}{layer}": 1}, f"l{layer + 1}", f"r{layer + 1}"
            )
    entries["l30"] = spec({"bottom": 1})
    entries["r30"] = spec({"bottom": 2})
    result = resolve("l0", entries)
    assert result.data["bottom"] == 2
    assert len(result.bases) == 60  # every entry but l0 itself and r0 (not inherited)


def test_malformed_inherits_item_is_invalid() -> None:
    with pytest.raises(Invalid) as caught:
        resolve("a", {"a": {"inherits": [{"nom": "b"}]}})
    assert caught.value.reason == "InvalidSpec"
    assert caught.value.violations[0].path == "spec.inherits[0].name"


def test_non_object_data_is_invalid() -> None:
    with pytest.raises(Invalid) as caught:
        resolve("a", {"a": {"data": [1, 2]}})
    assert caught.value.violations[0].path == "spec.data"


def test_unknown_entry() -> None:
    with pytest.raises(Invalid) as caught:
        resolve("nope", {})
    assert caught.value.reason == "MissingBase"
