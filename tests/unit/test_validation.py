"""Schema checks and data validation as users see them; hostile input that must never crash."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.domain.errors import Violation, field_path
from ferry.domain.jsonschema import MAX_DATA_DEPTH, check_schema, validate
from tests.support import PAYMENTS

RECURSIVE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {"child": {"$ref": "#/$defs/node"}, "value": {"type": "integer"}},
        }
    },
    "$ref": "#/$defs/node",
}


def nested(depth: int, key: str = "child", leaf: Any = None) -> dict[str, Any]:
    root: dict[str, Any] = {}
    cur = root
    for _ in range(depth - 1):
        cur[key] = {}
        cur = cur[key]
    if leaf is not None:
        cur.update(leaf)
    return root


# --- validate: what users see -----------------------------------------------------------


def test_design_example_pool_size_too_big() -> None:
    assert validate({"db": {"poolSize": 500}}, PAYMENTS) == [
        Violation("spec.data.db.poolSize", "500 is greater than the maximum of 100")
    ]


def test_valid_data_has_no_violations() -> None:
    assert validate({"db": {"poolSize": 40}, "featureX": True}, PAYMENTS) == []


def test_every_violation_is_reported_sorted() -> None:
    schema = {
        "type": "object",
        "required": ["db", "name"],
        "properties": {
            "db": PAYMENTS["properties"]["db"],
            "items": {"type": "array", "items": {"type": "integer"}},
        },
    }
    violations = validate({"db": {"poolSize": 0}, "items": [1, "two", 3, "four"]}, schema)
    assert violations == [
        Violation("spec.data", "'name' is a required property"),
        Violation("spec.data.db.poolSize", "0 is less than the minimum of 1"),
        Violation("spec.data.items[1]", "'two' is not of type 'integer'"),
        Violation("spec.data.items[3]", "'four' is not of type 'integer'"),
    ]
    assert violations == sorted(set(violations))


def test_non_identifier_keys_are_quoted() -> None:
    schema = {"additionalProperties": {"type": "integer"}}
    assert validate({"a.b": "x", "with space": "y", "ok-key": "z"}, schema) == [
        Violation("spec.data.ok-key", "'z' is not of type 'integer'"),
        Violation('spec.data["a.b"]', "'x' is not of type 'integer'"),
        Violation('spec.data["with space"]', "'y' is not of type 'integer'"),
    ]


def test_custom_path_prefix() -> None:
    assert validate(5, {"type": "string"}, path="spec.variants.on") == [
        Violation("spec.variants.on", "5 is not of type 'string'")
    ]


def test_older_draft_is_honoured() -> None:
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "maximum": 5,
        "exclusiveMaximum": True,
    }
    assert validate(5, draft4) == [
        Violation("spec.data", "5 is greater than or equal to the maximum of 5")
    ]


def test_recursive_local_ref_validates_deep_data() -> None:
    data = nested(MAX_DATA_DEPTH, leaf={"value": "x"})
    [violation] = validate(data, RECURSIVE)
    assert violation.path == "spec.data" + ".child" * (MAX_DATA_DEPTH - 1) + ".value"
    assert validate(nested(10, leaf={"value": 1}), RECURSIVE) == []


def test_long_messages_are_truncated() -> None:
    [violation] = validate({"k": "x" * 100_000}, {"type": "string"})
    assert len(violation.message) <= 500


def test_format_is_an_annotation() -> None:
    assert validate("not an email", {"format": "email"}) == []


# --- regex safety -----------------------------------------------------------------------


def test_catastrophic_pattern_answers_fast() -> None:
    schema = {"type": "string", "pattern": "^(a+)+$"}
    start = time.perf_counter()
    violations = validate("a" * 40 + "!", schema)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert violations == [Violation("spec.data", f"'{'a' * 40}!' does not match '^(a+)+$'")]
    assert validate("aaaa", schema) == []


@pytest.mark.parametrize(
    "schema",
    [
        {"patternProperties": {"^(a+)+$": {"type": "integer"}}},
        {"patternProperties": {"^(a+)+$": {}}, "additionalProperties": False},
        {"patternProperties": {"^(a+)+$": {}}, "unevaluatedProperties": False},
        {
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "patternProperties": {"^(a+)+$": {}},
            "unevaluatedProperties": False,
        },
        {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": "^(a+)+$"},
        {"$schema": "http://json-schema.org/draft-04/schema#", "pattern": "^(a+)+$"},
    ],
)
def test_catastrophic_pattern_in_every_regex_keyword_answers_fast(schema: dict[str, Any]) -> None:
    instance: Any = {"a" * 40 + "!": 1} if "pattern" not in schema else "a" * 40 + "!"
    start = time.perf_counter()
    violations = validate(instance, schema)
    assert time.perf_counter() - start < 1.0
    assert isinstance(violations, list)


def test_pattern_properties_key_matching_uses_search_semantics() -> None:
    schema = {"patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False}
    assert validate({"x-a": "ok"}, schema) == []
    assert validate({"x-a": 1, "y": 1}, schema) == [
        Violation("spec.data", "'y' does not match any of the regexes: '^x-'"),
        Violation("spec.data.x-a", "1 is not of type 'string'"),
    ]


def test_unsupported_pattern_in_validate_is_a_violation_not_a_fallback() -> None:
    [violation] = validate("aa", {"pattern": "(a)\\1"})
    assert "linear-time regex engine does not support" in violation.message


def test_unicode_pattern() -> None:
    assert validate("ñandú", {"pattern": "^\\p{L}+$"}) == []


# --- check_schema -----------------------------------------------------------------------


def test_valid_schema() -> None:
    assert check_schema(PAYMENTS) == []
    assert check_schema(RECURSIVE) == []
    assert check_schema(True) == []


def test_schema_errors_name_their_path() -> None:
    assert check_schema({"properties": {"a": {"minimum": "one"}}}) == [
        Violation("spec.schema.properties.a.minimum", "'one' is not of type 'number'")
    ]


def test_remote_ref_is_refused() -> None:
    schema = {"properties": {"x": {"$ref": "https://example.com/schemas/x.json"}}}
    assert check_schema(schema) == [
        Violation(
            "spec.schema.properties.x.$ref",
            'remote $ref "https://example.com/schemas/x.json" is not allowed'
            " (Ferry never fetches schemas)",
        )
    ]


def test_relative_file_ref_is_remote() -> None:
    [violation] = check_schema({"$ref": "other.json"})
    assert violation.path == "spec.schema.$ref"
    assert violation.message.startswith('remote $ref "other.json" is not allowed')


def test_unresolvable_local_ref() -> None:
    assert check_schema({"$ref": "#/$defs/missing"}) == [
        Violation("spec.schema.$ref", "$ref '#/$defs/missing' does not resolve within the schema")
    ]


def test_ref_to_embedded_resource_by_id_is_local() -> None:
    schema = {
        "$id": "https://ferry.dev/schemas/root",
        "$defs": {"item": {"$id": "item", "type": "integer"}},
        "properties": {"a": {"$ref": "item"}, "b": {"$ref": "https://ferry.dev/schemas/item"}},
    }
    assert check_schema(schema) == []
    assert validate({"a": "x"}, schema) == [
        Violation("spec.data.a", "'x' is not of type 'integer'")
    ]


def test_anchor_ref_is_local() -> None:
    schema = {"$defs": {"n": {"$anchor": "num", "type": "number"}}, "items": {"$ref": "#num"}}
    assert check_schema(schema) == []


def test_draft7_definitions() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"a": {"type": "string"}},
        "properties": {"a": {"$ref": "#/definitions/a"}, "b": {"$ref": "#/definitions/b"}},
    }
    assert check_schema(schema) == [
        Violation(
            "spec.schema.properties.b.$ref",
            "$ref '#/definitions/b' does not resolve within the schema",
        )
    ]


def test_unknown_dialect() -> None:
    [violation] = check_schema({"$schema": "https://example.com/my-dialect"})
    assert violation.path == "spec.schema.$schema"
    assert violation.message.startswith("unknown $schema 'https://example.com/my-dialect'")


def test_nested_dialect_is_refused() -> None:
    schema = {"properties": {"a": {"$schema": "http://json-schema.org/draft-07/schema#"}}}
    assert check_schema(schema) == [
        Violation(
            "spec.schema.properties.a.$schema",
            "$schema is only allowed at the root of the schema",
        )
    ]
    # and validate refuses to apply it rather than running stock (backtracking) keywords
    [violation] = validate("x", schema)
    assert violation.message.startswith("cannot validate: $schema is only allowed at the root")


def test_unsupported_regex_features_are_reported() -> None:
    schema = {
        "properties": {
            "back": {"pattern": "(a)\\1"},
            "look": {"pattern": "^(?!admin).*$"},
            "broken": {"pattern": "(unclosed"},
        },
        "patternProperties": {"(?<=x)y": {}},
    }
    unsupported = "pattern uses a feature Ferry's linear-time regex engine does not support: "
    assert check_schema(schema) == [
        Violation(
            'spec.schema.patternProperties["(?<=x)y"]',
            unsupported + "invalid perl operator: (?<=",
        ),
        Violation(
            "spec.schema.properties.back.pattern", unsupported + "invalid escape sequence: \\1"
        ),
        Violation(
            "spec.schema.properties.broken.pattern",
            "invalid regular expression '(unclosed': missing ): (unclosed",
        ),
        Violation(
            "spec.schema.properties.look.pattern", unsupported + "invalid perl operator: (?!"
        ),
    ]


def test_a_property_named_pattern_is_not_a_regex() -> None:
    schema = {"properties": {"pattern": {"type": "string"}, "$ref": {"type": "string"}}}
    assert check_schema(schema) == []


def test_check_schema_rejects_non_schemas() -> None:
    [violation] = check_schema("not a schema")
    assert violation.path == "spec.schema"
    assert check_schema({"type": "object"}, path="x") == []


# --- hostile input: never an exception --------------------------------------------------


def test_ten_thousand_levels_of_data() -> None:
    [violation] = validate(nested(10_000), RECURSIVE)
    assert violation.message == f"data is nested deeper than {MAX_DATA_DEPTH} levels"
    assert violation.path == "spec.data" + ".child" * MAX_DATA_DEPTH


def test_ten_thousand_levels_of_lists() -> None:
    data: Any = []
    for _ in range(10_000):
        data = [data]
    [violation] = validate(data, {})
    assert violation.path == "spec.data" + "[0]" * MAX_DATA_DEPTH


def test_ten_thousand_levels_of_schema() -> None:
    schema = nested(10_000, key="not")
    [violation] = check_schema(schema)
    assert "nested deeper than" in violation.message
    [violation] = validate({}, schema)
    assert violation.path == "spec.data"


def test_nul_and_unicode_keys() -> None:
    schema = {"additionalProperties": {"type": "string"}, "propertyNames": {"maxLength": 3}}
    data = {"a\x00b": 1, "日本語": "ok", "emoji😀": "x", "\ud800": "lone surrogate"}
    violations = validate(data, schema)
    assert Violation('spec.data["a\\u0000b"]', "1 is not of type 'string'") in violations
    assert any(v.path == "spec.data" and "emoji" in v.message for v in violations)
    assert check_schema({"properties": {"a\x00": {"pattern": "\x00"}}}) == []
    assert validate({"k": "x\x00y"}, {"properties": {"k": {"pattern": "x\\x00y"}}}) == []


def test_remote_ref_at_validation_time_is_a_violation() -> None:
    assert validate({}, {"$ref": "https://example.com/x.json"}) == [
        Violation(
            "spec.data",
            'cannot validate: $ref "https://example.com/x.json" does not resolve within the'
            " schema (Ferry never fetches schemas)",
        )
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    ],
)
def test_endless_ref_recursion_is_a_violation(schema: dict[str, Any]) -> None:
    assert validate({"a": 1}, schema) == [
        Violation("spec.data", "cannot validate: the schema's $ref recursion never ends")
    ]


def test_non_json_schema_values_do_not_raise() -> None:
    assert validate({}, {"const": {1, 2}})[0].path == "spec.data"  # a set cannot be JSON
    [violation] = check_schema({"const": object()})
    assert violation.path == "spec.schema"
    assert violation.message.startswith("schema is not JSON")


def test_cached_schema_is_not_affected_by_caller_mutation() -> None:
    schema: dict[str, Any] = {"type": "integer"}
    assert validate("x", schema) != []
    schema["type"] = "string"
    assert validate("x", schema) == []


# --- property: never raises -------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)

SCHEMAS: list[Any] = [
    PAYMENTS,
    RECURSIVE,
    {"patternProperties": {"^(a+)+$": {"type": "string"}}, "unevaluatedProperties": False},
    {"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "array", "minItems": 2}]},
    {"$ref": "https://example.com/remote.json"},
    {
        "type": "object",
        "additionalProperties": {"$ref": "#"},
        "propertyNames": {"pattern": "^\\w*$"},
    },
    {"if": {"type": "object"}, "then": {"required": ["x"]}, "else": {"type": "string"}},
    False,
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(instance=json_values, schema=st.sampled_from(SCHEMAS))
def test_validate_never_raises(instance: Any, schema: Any) -> None:
    violations = validate(instance, schema)
    assert violations == sorted(set(violations))
    assert all(isinstance(v, Violation) and v.path.startswith("spec.data") for v in violations)


@settings(max_examples=200, deadline=None)
@given(schema=json_values)
def test_check_schema_never_raises(schema: Any) -> None:
    assert isinstance(check_schema(schema), list)


def test_plan_entry_bounds_nesting_even_without_a_schema() -> None:
    from ferry.domain.entry import plan_entry
    from ferry.domain.errors import Invalid

    data: dict = {}
    node = data
    for _ in range(2000):
        node["a"] = {}
        node = node["a"]

    with pytest.raises(Invalid) as raised:
        plan_entry("e", {"data": data}, entries={}, schemas={})

    assert raised.value.reason == "InvalidData"
    [violation] = raised.value.violations
    assert violation.path == "spec.data" + ".a" * 64
    assert violation.message == "data is nested deeper than 64 levels"


def test_secret_data_naming_a_path_the_namespace_may_not_use_is_refused() -> None:
    """Tenant A cannot make Ferry copy tenant B's secrets: only allowed prefixes (issue 16)."""
    from ferry.domain.entry import plan_entry
    from ferry.domain.errors import Invalid

    spec = {
        "data": {"a": 1},
        "secretData": {"DB_PASSWORD": {"vault": {"path": "team-b/db", "key": "password"}}},
    }

    with pytest.raises(Invalid) as raised:
        plan_entry("e", spec, entries={}, schemas={}, namespace="team-a")
    assert raised.value.reason == "InvalidSecretData"
    assert [v.path for v in raised.value.violations] == ["spec.secretData.DB_PASSWORD.vault.path"]
    assert "may not name any Vault path" in raised.value.message

    with pytest.raises(Invalid) as raised:
        plan_entry("e", spec, entries={}, schemas={}, namespace="team-a", vault_paths=["team-a"])
    assert 'may only name Vault paths under "team-a"' in raised.value.message

    plan = plan_entry("e", spec, entries={}, schemas={}, namespace="team-b", vault_paths=["team-b"])
    assert [(r.name, r.vault.path, r.vault.key) for r in plan.secrets] == [
        ("DB_PASSWORD", "team-b/db", "password")
    ]
    assert plan.hash == plan_entry("e", {"data": {"a": 1}}, entries={}, schemas={}).hash


# --- Ferry's keywords say what jsonschema's say -----------------------------------------

DRAFT_2019 = "https://json-schema.org/draft/2019-09/schema"
SAME_AS_JSONSCHEMA: list[tuple[Any, list[Any]]] = [
    (
        {
            "$defs": {"base": {"properties": {"a": {}}, "patternProperties": {"^x-": {}}}},
            "$ref": "#/$defs/base",
            "unevaluatedProperties": False,
        },
        [{"a": 1, "x-y": 2}, {"a": 1, "b": 2, "c": 3}],
    ),
    (
        {
            "$schema": DRAFT_2019,
            "$recursiveAnchor": True,
            "properties": {
                "a": {"type": "integer"},
                "child": {"$recursiveRef": "#", "unevaluatedProperties": False},
            },
        },
        [{"child": {"a": 1}}, {"child": {"a": 1, "b": 2}}, {"child": {"a": "x"}}],
    ),
    (
        {"properties": {"a": {}}, "patternProperties": {"^x-": {"type": "string"}}},
        [{"a": 1, "x-1": "ok", "x-2": 2}],
    ),
    (
        {"properties": {"a": {}}, "patternProperties": {"^x-": {}}, "additionalProperties": False},
        [{"a": 1, "x-1": 1, "b": 2, "c": 3}],
    ),
    ({"properties": {"a": {}}, "additionalProperties": False}, [{"a": 1, "b": 2}]),
    (
        {"anyOf": [{"properties": {"a": {}}}], "unevaluatedProperties": {"type": "string"}},
        [{"a": 1, "b": 2, "c": "ok"}],
    ),
    ({"uniqueItems": True, "maxItems": 9}, [[1, 2, 1.0], [{"a": [1]}, {"a": [True]}], ["x", "y"]]),
    ({"pattern": "^a+$"}, ["aaa", "ab"]),
]


@pytest.mark.parametrize(("schema", "instances"), SAME_AS_JSONSCHEMA)
def test_ferrys_keywords_answer_as_jsonschemas_own(schema: Any, instances: list[Any]) -> None:
    from jsonschema import validators as stock

    reference = stock.validator_for(schema)(schema)
    for instance in instances:
        expected = sorted(
            {
                Violation(field_path("spec.data", e.absolute_path), e.message)
                for e in reference.iter_errors(instance)
            }
        )
        assert validate(instance, schema) == expected
