"""Frozen index specs (decision 0033): they cannot change, so what is remembered on them stays
true, and every check answers on them exactly as on the plain JSON they were made from."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.domain.admission import cheap_to_check, check_entry
from ferry.domain.frozen import FrozenDict, FrozenList, freeze, remembered
from ferry.domain.hashing import canonical_json
from ferry.domain.jsonschema.walk import _first_too_deep, too_deep
from ferry.handlers.watches import snapshot

#: A flat schema (checked on the admission thread) and data it accepts.
SCHEMA = {
    "type": "object",
    "required": ["name", "size"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z-]+$", "maxLength": 20},
        "size": {"type": "integer", "minimum": 0},
    },
}
DATA = {"name": "web", "size": 3}
REF = "#/$defs/n"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)


def containers(value: Any) -> list[Any]:
    found, stack = [], [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            found.append(node)
            stack.extend(node.values() if isinstance(node, dict) else node)
    return found


@given(json_values)
def test_a_frozen_value_is_the_same_json_and_nothing_in_it_can_change(value: Any) -> None:
    frozen = freeze(value)
    assert frozen == value
    assert canonical_json(frozen) == canonical_json(value)
    for node in containers(frozen):
        assert type(node) in (FrozenDict, FrozenList)
        with pytest.raises(TypeError):
            node.clear()
        with pytest.raises(TypeError):
            node[0 if isinstance(node, list) else "k"] = 1
    assert not any(a is b for a in containers(frozen) for b in containers(value))


@given(json_values)
def test_a_frozen_value_survives_pickling_and_copies_frozen(value: Any) -> None:
    frozen = freeze(value)
    for again in (pickle.loads(pickle.dumps(frozen)), copy.deepcopy(frozen), copy.copy(frozen)):
        assert again == value
        assert type(again) is type(frozen)


def test_every_mutating_method_refuses() -> None:
    frozen = freeze({"a": [1, 2], "b": {"c": 3}})
    for call in (
        lambda: frozen.update(x=1),
        lambda: frozen.setdefault("x", 1),
        lambda: frozen.pop("a"),
        lambda: frozen.popitem(),
        lambda: frozen.__delitem__("a"),
        lambda: frozen.__ior__({"x": 1}),
        lambda: frozen["a"].append(3),
        lambda: frozen["a"].extend([3]),
        lambda: frozen["a"].insert(0, 3),
        lambda: frozen["a"].pop(),
        lambda: frozen["a"].remove(1),
        lambda: frozen["a"].sort(),
        lambda: frozen["a"].reverse(),
        lambda: frozen["a"].__iadd__([3]),
        lambda: frozen["a"].__imul__(2),
        lambda: frozen["a"].__delitem__(0),
        lambda: frozen["b"].clear(),
    ):
        with pytest.raises(TypeError, match="cannot be changed"):
            call()
    assert frozen == {"a": [1, 2], "b": {"c": 3}}


def test_ten_thousand_levels_freeze_without_recursion() -> None:
    value: Any = {}
    for _ in range(10_000):
        value = {"child": [value]}
    frozen = freeze(value)
    assert too_deep(frozen, 64) == ("child", 0) * 32


def test_a_fact_is_computed_once_on_a_frozen_value_and_each_time_on_a_plain_one() -> None:
    calls: list[int] = []

    def fact(n: int) -> int:
        calls.append(n)
        return n * 2

    frozen, plain = freeze({"a": 1}), {"a": 1}
    assert [remembered(frozen, "double", fact, 21) for _ in range(3)] == [42, 42, 42]
    assert [remembered(plain, "double", fact, 21) for _ in range(3)] == [42, 42, 42]
    assert len(calls) == 4  # once for the frozen value, three times for the plain one
    assert remembered(frozen, "other", fact, 1) == 2  # facts are kept apart by name


def test_the_index_keeps_specs_frozen() -> None:
    body = {"metadata": {"uid": "u"}, "spec": {"schema": {"type": "object"}}}
    spec = snapshot(body).spec
    with pytest.raises(TypeError):
        spec["schema"]["type"] = "string"  # type: ignore[index]
    body["spec"]["schema"]["type"] = "array"  # the decoded event is not aliased either
    assert spec == {"schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("data", "schema"),
    [
        (DATA, SCHEMA),  # valid, flat: checked inline
        ({**DATA, "size": -1, "name": "UPPER", "extra": 1}, SCHEMA),  # invalid
        ({"a": [1, "x"]}, {"type": "object", "properties": {"a": {"items": {"type": "string"}}}}),
        ({"a": 1}, {"$defs": {"n": {"type": "string"}}, "properties": {"a": {"$ref": REF}}}),
    ],
)
def test_checks_answer_on_frozen_specs_as_on_plain_ones(data: Any, schema: Any) -> None:
    spec = {"schemaRef": {"name": "s"}, "data": data}
    plain = {"s": {"schema": json.loads(json.dumps(schema))}}
    frozen = {"s": freeze({"schema": schema})}
    expected = check_entry("ns", "e", spec, {}, plain)
    assert cheap_to_check(spec, {}, frozen) == cheap_to_check(spec, {}, plain)
    for _ in range(2):  # computed, then remembered
        assert check_entry("ns", "e", spec, {}, frozen) == expected
        assert cheap_to_check(spec, {}, frozen) == cheap_to_check(spec, {}, plain)


@given(json_values, st.integers(min_value=0, max_value=6))
def test_the_depth_bound_finds_what_the_path_walk_finds(value: Any, limit: int) -> None:
    assert too_deep(value, limit) == _first_too_deep(value, limit)
