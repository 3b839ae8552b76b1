"""Validation a property at a time (``ferry.domain.jsonschema.split``) finds exactly what
validating the whole document finds: same paths, same messages, remembered or not."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.domain.jsonschema import validate
from ferry.domain.jsonschema.dialects import REGISTRY, draft_for
from ferry.domain.jsonschema.keywords import safe_class
from ferry.domain.jsonschema.split import REMEMBERED, Split, splittable

DIALECTS = [
    None,  # 2020-12
    "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-04/schema#",
]
NAMES = ["a", "b", "c", "bd", "id"]

subschemas = st.recursive(
    st.sampled_from(
        [
            True,
            False,
            {"type": "integer", "minimum": 0, "maximum": 10},
            {"type": "string", "maxLength": 3, "pattern": "^[ab]+$"},
            {"enum": [1, "a", None, [1]]},
            {"const": {"x": 1}},
            {"$ref": "#/$defs/small"},
            {"$ref": "#/definitions/word"},
            {"type": "array", "items": {"type": "string"}, "maxItems": 2, "uniqueItems": True},
            {"multipleOf": 2},
        ]
    ),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"anyOf": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
        st.builds(
            lambda props, req: {
                "type": "object",
                "properties": props,
                "required": req,
                "additionalProperties": False,
            },
            st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2),
            st.lists(st.sampled_from(["x", "y"]), max_size=2, unique=True),
        ),
    ),
    max_leaves=6,
)


@st.composite
def object_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "$defs": {"small": {"type": "integer", "maximum": 3}},
        "definitions": {"word": {"type": "string", "minLength": 2}},
        "properties": draw(
            st.dictionaries(st.sampled_from(NAMES), subschemas, min_size=1, max_size=4)
        ),
    }
    dialect = draw(st.sampled_from(DIALECTS))
    if dialect is not None:
        schema["$schema"] = dialect
    for keyword, values in (
        ("type", st.sampled_from(["object", ["object", "null"], "array"])),
        ("required", st.lists(st.sampled_from(NAMES), max_size=3, unique=True)),
        ("additionalProperties", st.sampled_from([False, True, {"type": "integer"}])),
        ("patternProperties", st.just({"^b": {"type": "string"}})),
        ("minProperties", st.integers(0, 3)),
        ("maxProperties", st.integers(0, 3)),
        ("propertyNames", st.just({"maxLength": 1})),
    ):
        if draw(st.booleans()):
            schema[keyword] = draw(values)
    return schema


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 12) | st.sampled_from(["", "a", "ab", "abc", "c"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3)
    ),
    max_leaves=8,
)
documents = st.dictionaries(st.sampled_from([*NAMES, "e", "f"]), json_values, max_size=6) | (
    json_values
)


def whole(schema: dict[str, Any], document: Any) -> Counter[tuple[Any, str]]:
    draft = draft_for(schema)
    assert draft is not None
    validator = safe_class(draft)(schema, registry=REGISTRY)
    return Counter((tuple(e.absolute_path), e.message) for e in validator.iter_errors(document))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=object_schemas(), document=documents, again=documents)
def test_a_property_at_a_time_finds_what_the_whole_schema_finds(
    schema: dict[str, Any], document: Any, again: Any
) -> None:
    draft = draft_for(schema)
    assert draft is not None and splittable(schema, draft), schema
    split = Split(schema, safe_class(draft), REGISTRY)
    for each in (document, again, document):  # the last one from what was remembered
        assert Counter(split.problems(each)) == whole(schema, each), (schema, each)


def test_an_edit_keeps_every_other_propertys_violation() -> None:
    """What a user sees does not depend on what was remembered from the last apply."""
    schema = {
        "type": "object",
        "properties": {"port": {"type": "integer", "maximum": 65535}, "host": {"pattern": "^h"}},
        "required": ["host"],
    }
    first = validate({"port": 70000, "host": "x"}, schema)
    second = validate({"port": 80, "host": "x"}, schema)
    assert [v.path for v in first] == ["spec.data.host", "spec.data.port"]
    assert [str(v) for v in second] == ["spec.data.host: 'x' does not match '^h'"]


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"a": {}}, "$ref": "#/$defs/x", "$defs": {"x": {}}},
        {"properties": {"a": {}}, "allOf": [{"required": ["a"]}]},
        {"properties": {"a": {}}, "unevaluatedProperties": False},
        {"properties": {"a": {}, "b": {"$ref": "#/properties/a"}}},
        {"properties": {"a": {"$id": "https://x.example/a"}}},
        {"properties": {"a": {"$anchor": "here"}}},
        {"properties": {"a": {"$dynamicRef": "#meta"}}},
        {"properties": {"a": {"$ref": "#"}}},
        {"properties": {"a": {"$ref": "#/%24defs/x"}}, "$defs": {"x": {}}},
        {"properties": {}},
        {"type": "object"},
        {"properties": {"a": {}}, "$schema": "http://json-schema.org/draft-03/schema#"},
    ],
)
def test_schemas_a_split_could_get_wrong_are_validated_whole(schema: dict[str, Any]) -> None:
    draft = draft_for(schema)
    assert draft is not None
    assert not splittable(schema, draft)


def test_what_is_remembered_is_bounded() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    for n in range(REMEMBERED.size + 100):
        validate({"n": n}, schema)
    assert len(REMEMBERED) == REMEMBERED.size
