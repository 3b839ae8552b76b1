"""The complexity budget: a schema that would make every validation slow is refused when it is
admitted (webhook, reconciler and `ferry validate` all call `check_schema`) and never applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ferry.domain.admission import check_schema_change
from ferry.domain.errors import Violation
from ferry.domain.jsonschema import (
    MAX_EXPANDED,
    MAX_FAN_OUT,
    MAX_SUBSCHEMAS,
    MAX_UNIQUE_ITEMS,
    TOO_COSTLY,
    check_budget,
    check_schema,
    is_too_costly,
    validate,
)
from tests.support import PAYMENTS

FLAGD = Path(__file__).resolve().parents[1] / "data" / "flagd"


def chain(levels: int = 12, width: int = 3, keyword: str = "anyOf") -> dict[str, Any]:
    """Issue 11's schema: a $defs chain of anyOf with three $ref branches, a dozen levels deep
    (about 1 KB). Validating one value that fails it applies 3^12 subschemas."""
    defs: dict[str, Any] = {
        f"d{i}": {keyword: [{"$ref": f"#/$defs/d{i + 1}"} for _ in range(width)]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string", "minLength": 5}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def costly(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if is_too_costly(v)]


# --- issue 11's schema ---------------------------------------------------------------------------


@pytest.mark.timeout(60)  # a hang guard, not a measurement: unbounded, this takes minutes
def test_the_costly_schema_from_issue_11_is_refused_with_paths_and_limits() -> None:
    schema = chain()
    assert len(json.dumps(schema)) < 1500
    violations = check_schema(schema)
    assert violations == costly(violations) and violations  # nothing else is wrong with it
    by_limit = {v.message.split(";")[-1].strip(): v for v in violations}
    expanded = by_limit[f"the limit is {MAX_EXPANDED}"]
    fan_out = by_limit[f"the limit is {MAX_FAN_OUT}"]
    # each names the smallest part of the schema that is over that limit on its own
    assert expanded == Violation(
        "spec.schema.$defs.d3",
        f"{TOO_COSTLY}: expands to 59047 subschemas when its $ref are followed; "
        f"the limit is {MAX_EXPANDED}",
    )
    assert fan_out == Violation(
        "spec.schema.$defs.d6",
        f"{TOO_COSTLY}: applies 2185 subschemas to one value through allOf/anyOf/oneOf, not, "
        f"if/then/else and $ref; the limit is {MAX_FAN_OUT}",
    )


@pytest.mark.timeout(60)
def test_compatibility_none_skips_compatibility_never_the_budget() -> None:
    spec = {"schema": chain(), "compatibility": "None"}
    stored = {"s": {"schema": PAYMENTS}}
    created = check_schema_change("ns", "s", spec, {}, {})
    updated = check_schema_change("ns", "s", spec, {"e": {"schemaRef": {"name": "s"}}}, stored)
    assert created == updated == check_schema(chain())
    assert created and all(is_too_costly(v) for v in created)


@pytest.mark.timeout(60)
def test_a_schema_over_budget_is_never_applied_to_data() -> None:
    """One stored while the webhook was off still never runs: validate refuses it first."""
    [violation] = validate(1, chain())  # 1 fails every branch: unbounded, minutes of work
    assert violation.path == "spec.data"
    assert violation.message.startswith(
        f"{TOO_COSTLY}: cannot validate: the schema is over the complexity budget "
        "(schema.$defs.d3: expands to 59047 subschemas"
    )
    assert is_too_costly(violation)


# --- each limit ----------------------------------------------------------------------------------


def test_subschema_count() -> None:
    many = {"properties": {f"p{i}": {"type": "string"} for i in range(MAX_SUBSCHEMAS)}}
    assert check_budget(many) == [
        Violation(
            "spec.schema",
            f"{TOO_COSTLY}: the schema has {MAX_SUBSCHEMAS + 1} subschemas; "
            f"the limit is {MAX_SUBSCHEMAS}",
        )
    ]
    del many["properties"]["p0"]
    assert check_budget(many) == []


def test_fan_out_over_one_value() -> None:
    wide = {"oneOf": [{"const": i} for i in range(MAX_FAN_OUT)]}  # the root plus 1000 branches
    [violation] = check_budget(wide)
    assert violation.path == "spec.schema"
    assert f"applies {MAX_FAN_OUT + 1} subschemas to one value" in violation.message
    wide["oneOf"].pop()
    assert check_budget(wide) == []


def test_ref_expansion_without_fan_out() -> None:
    """Each level refers three times to the next, but under different properties: no value
    meets more than one, yet the schema expands to 3^12 subschemas."""
    defs: dict[str, Any] = {
        f"d{i}": {"properties": {k: {"$ref": f"#/$defs/d{i + 1}"} for k in "abc"}}
        for i in range(12)
    }
    defs["d12"] = {"type": "integer"}
    [violation] = check_budget({"$defs": defs, "$ref": "#/$defs/d0"})
    assert violation.path.startswith("spec.schema.$defs.d")
    assert "subschemas when its $ref are followed" in violation.message


def test_recursion_that_meets_the_same_value_twice_per_level() -> None:
    node = {
        "anyOf": [
            {"properties": {"child": {"$ref": "#/$defs/node"}}, "required": [key]}
            for key in ("x", "y")
        ]
    }
    [violation] = check_budget({"$defs": {"node": node}, "$ref": "#/$defs/node"})
    assert violation == Violation(
        "spec.schema.$defs.node",
        f"{TOO_COSTLY}: $ref recursion applies this subschema 2 or more times to the same "
        "nested value (value.child), so the work multiplies with every level of the data; "
        "the limit is once per level",
    )


@pytest.mark.parametrize(
    "schema",
    [
        # a linked list, a binary tree, any JSON value, named and other keys: linear in the data
        {"$defs": {"n": {"properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
        {"properties": {"left": {"$ref": "#"}, "right": {"$ref": "#"}}},
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#"}},
                {"type": "object", "additionalProperties": {"$ref": "#"}},
            ]
        },
        {"properties": {"a": {"$ref": "#"}}, "additionalProperties": {"$ref": "#"}},
        # recursion on the same value never ends; validate says so (it is not slow)
        {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
    ],
)
def test_recursion_that_follows_the_data_is_within_budget(schema: dict[str, Any]) -> None:
    assert check_budget(schema) == []


def test_unique_items_needs_a_bounded_array() -> None:
    assert check_budget({"properties": {"tags": {"uniqueItems": True}}}) == [
        Violation(
            "spec.schema.properties.tags.uniqueItems",
            f"{TOO_COSTLY}: uniqueItems needs maxItems of at most {MAX_UNIQUE_ITEMS} in the "
            "same subschema",
        )
    ]
    too_many = {"uniqueItems": True, "maxItems": MAX_UNIQUE_ITEMS + 1}
    assert [v.path for v in check_budget(too_many)] == ["spec.schema.uniqueItems"]
    assert check_budget({"uniqueItems": True, "maxItems": MAX_UNIQUE_ITEMS}) == []
    assert check_budget({"uniqueItems": False}) == []


def test_real_schemas_are_well_within_budget() -> None:
    """flagd's targeting schema (JSON Logic: recursive anyOf over every operator)."""
    targeting = json.loads((FLAGD / "targeting.json").read_text())
    assert check_schema(targeting) == []
    assert check_budget(PAYMENTS) == []


def test_check_budget_never_raises_and_leaves_other_problems_to_check_schema() -> None:
    assert check_budget(True) == []
    assert check_budget({"$schema": "https://example.com/unknown"}) == []
    assert check_budget({"$ref": "#/nowhere", "properties": 5}) == []


# --- uniqueItems, in linear time with jsonschema's equality --------------------------------------


@pytest.mark.parametrize(
    ("items", "unique"),
    [
        ([1, 1.0], False),
        ([1, True], True),
        ([0, False], True),
        ([{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}], False),
        ([[1], [True]], True),
        (["1", 1], True),
        ([None, None], False),
    ],
)
def test_unique_items_compares_as_json_schema_does(items: list[Any], unique: bool) -> None:
    schema = {"uniqueItems": True, "maxItems": 10}
    violations = validate(items, schema)
    assert violations == (
        [] if unique else [Violation("spec.data", f"{items!r} has non-unique elements")]
    )


@pytest.mark.timeout(60)  # jsonschema's own pairwise comparison of 4,000 objects: ~8 million
def test_unique_items_over_thousands_of_objects() -> None:
    schema = {"uniqueItems": True, "maxItems": MAX_UNIQUE_ITEMS}
    items = [{"id": i, "tags": ["a", "b"]} for i in range(MAX_UNIQUE_ITEMS)]
    assert validate(items, schema) == []
    items[-1] = {"tags": ["a", "b"], "id": 0}
    [violation] = validate(items, schema)  # the message quotes the array, cut at 500 characters
    assert violation.path == "spec.data" and violation.message.startswith("[{'id': 0, 'tags'")
    longer = [{"id": i} for i in range(4 * MAX_UNIQUE_ITEMS)]  # maxItems refuses it, and
    assert len(validate(longer, schema)) == 1  # comparing its items is linear all the same
