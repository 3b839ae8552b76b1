"""flags.json rendering: flagd's schema accepts it, and flagd's own examples evaluate the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from ferry.domain.flags import SCHEMA_URI, Flag, Reason, evaluate, parse_flag, to_flagd

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "flagd"


@pytest.fixture(scope="module")
def flagd_schema() -> Draft7Validator:
    """flagd's flag-definition schema, with targeting.json resolved from disk only."""
    docs = [json.loads((SCHEMA_DIR / n).read_text()) for n in ("flags.json", "targeting.json")]
    registry: Registry = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT7)) for doc in docs
    )
    validator = Draft7Validator(docs[0], registry=registry)
    Draft7Validator.check_schema(docs[0])
    return validator


def errors(validator: Draft7Validator, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


EVERY_OPERATOR: dict[str, Any] = {
    "variants": {"on": {"color": "green"}, "off": {"color": "grey"}, "beta": {"color": "blue"}},
    "defaultVariant": "off",
    "targeting": [
        {
            "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
            "variant": "on",
        },
        {"when": [{"attribute": "email", "op": "startsWith", "value": "qa-"}], "variant": "beta"},
        {"when": [{"attribute": "agent", "op": "contains", "value": "Mobile"}], "variant": "beta"},
        {
            "when": [
                {"attribute": "plan", "op": "equals", "value": "pro"},
                {"attribute": "tier", "op": "notEquals", "value": 3},
                {"attribute": "country", "op": "notIn", "values": ["KP", "IR"]},
                {"attribute": "seats", "op": "gt", "value": 10},
                {"attribute": "seats", "op": "lte", "value": 500.5},
            ],
            "variant": "on",
        },
        {
            "when": [
                {"attribute": "app.version", "op": "semverGe", "value": "2.0.0-rc.1"},
                {"attribute": "app.version", "op": "semverLt", "value": "3.0.0"},
                {"attribute": "os", "op": "semverMatchMajor", "value": "14.0.0"},
                {"attribute": "kernel", "op": "semverMatchMinor", "value": "6.1.0"},
                {"attribute": "build", "op": "semverEq", "value": "1.0.0+abc"},
                {"attribute": "build", "op": "semverNe", "value": "0.9.0"},
                {"attribute": "build", "op": "semverGt", "value": "0.1.0"},
                {"attribute": "build", "op": "semverLe", "value": "9.0.0"},
                {"attribute": "age", "op": "gte", "value": 18},
                {"attribute": "age", "op": "lt", "value": 120},
                {"attribute": "beta", "op": "equals", "value": True},
            ],
            "variant": "beta",
        },
        {
            "when": [{"attribute": "region", "op": "in", "values": ["eu-west-1", "eu-central-1"]}],
            "split": [
                {"variant": "on", "weight": 25},
                {"variant": "off", "weight": 70},
                {"variant": "beta", "weight": 5},
            ],
        },
        {"when": [{"attribute": "region", "op": "in", "values": ["us-east-1"]}], "variant": "on"},
        {
            "when": [{"attribute": "plan", "op": "equals", "value": "team"}],
            "split": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}],
            "bucketBy": "account.id",
        },
        {
            "split": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 99}],
        },
    ],
}


def test_every_operator_renders_to_schema_valid_flagd(flagd_schema: Draft7Validator) -> None:
    flags = {
        "everything": parse_flag("everything", EVERY_OPERATOR),
        "static": parse_flag("static", {"variants": {"a": 1, "b": 2.5}, "defaultVariant": "a"}),
        "off": parse_flag(
            "off",
            {
                "state": "DISABLED",
                "variants": {"x": "X", "y": "Y"},
                "defaultVariant": "y",
                "targeting": [{"variant": "x"}],
            },
        ),
        "bools": parse_flag(
            "bools", {"variants": {"on": True, "off": False}, "defaultVariant": "on"}
        ),
    }
    document = to_flagd(flags)
    assert document["$schema"] == SCHEMA_URI
    assert list(document["flags"]) == ["bools", "everything", "off", "static"]
    assert errors(flagd_schema, document) == []
    # and it survives JSON round-tripping (what lands in the ConfigMap)
    assert json.loads(json.dumps(document)) == document


def test_schema_is_not_vacuous(flagd_schema: Draft7Validator) -> None:
    good = to_flagd({"f": parse_flag("f", {"variants": {"a": "A"}, "defaultVariant": "a"})})
    mixed = json.loads(json.dumps(good))
    mixed["flags"]["f"]["variants"]["b"] = 1
    assert errors(flagd_schema, mixed)
    bad_semver = json.loads(json.dumps(good))
    bad_semver["flags"]["f"]["targeting"] = {
        "if": [{"sem_ver": [{"var": "v"}, "=", "v1"]}, "a", None]
    }
    assert errors(flagd_schema, bad_semver)


def test_rule_chain_translation() -> None:
    flag = parse_flag(
        "new-checkout",
        {
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": [
                {
                    "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
                    "variant": "on",
                },
                {
                    "when": [
                        {"attribute": "region", "op": "in", "values": ["eu-west-1"]},
                        {"attribute": "age", "op": "gt", "value": 17},
                    ],
                    "split": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
                },
            ],
        },
    )
    assert to_flagd({"new-checkout": flag})["flags"]["new-checkout"] == {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {
            "if": [
                {"ends_with": [{"var": "email"}, "@example.com"]},
                "on",
                {
                    "if": [
                        {
                            "and": [
                                {"===": [{"var": "region"}, "eu-west-1"]},
                                {"!==": [{"var": "age"}, None]},
                                {">": [{"var": "age"}, 17]},
                            ]
                        },
                        {"fractional": [["on", 25], ["off", 75]]},
                        None,
                    ]
                },
            ]
        },
    }


def test_bucket_by_renders_a_salted_guarded_fractional() -> None:
    flag = parse_flag(
        "team-rollout",
        {
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": [
                {
                    "split": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}],
                    "bucketBy": "account.id",
                }
            ],
        },
    )
    var = {"var": "account.id"}
    # only a non-empty string is bucketed (anything else: null → default variant), salted with
    # the flag key so two flags bucketing by one attribute still split independently
    assert to_flagd({"team-rollout": flag})["flags"]["team-rollout"]["targeting"] == {
        "if": [
            {"and": [{"starts_with": [var, ""]}, {"!==": [var, ""]}]},
            {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, var]}, ["on", 30], ["off", 70]]},
            None,
        ]
    }


def test_unconditional_first_rule_is_still_a_targeting_object(
    flagd_schema: Draft7Validator,
) -> None:
    flag = parse_flag(
        "f",
        {"variants": {"a": "A", "b": "B"}, "defaultVariant": "a", "targeting": [{"variant": "b"}]},
    )
    document = to_flagd({"f": flag})
    assert document["flags"]["f"]["targeting"] == {"if": [True, "b", None]}
    assert errors(flagd_schema, document) == []


def test_published_key_must_be_the_flag_key() -> None:
    flag = parse_flag("a", {"variants": {"x": 1}, "defaultVariant": "x"})
    with pytest.raises(ValueError, match="keys must match"):
        to_flagd({"b": flag})


def test_rendering_does_not_share_variant_objects() -> None:
    flag = parse_flag("f", {"variants": {"x": {"n": 1}}, "defaultVariant": "x"})
    to_flagd({"f": flag})["flags"]["f"]["variants"]["x"]["n"] = 2
    assert evaluate(flag, None, {}).value == {"n": 1}


# --- flagd's own examples -------------------------------------------------------------------
# Vectors from open-feature/flagd-testbed gherkin/targeting.feature, with the flags of
# flags/custom-ops.json written as Ferry rules. Rules flagd's schema rejects (a "v1.0.0" or
# partial "1" comparison target, a numeric ends_with target) are written in their valid form.


def _flag(name: str, default: str, rules: list[dict[str, Any]], variants: list[str]) -> Flag:
    return parse_flag(
        name,
        {"variants": {v: v for v in variants}, "defaultVariant": default, "targeting": rules},
    )


def _rule(op: str, value: str, variant: str, attribute: str = "version") -> dict[str, Any]:
    return {"when": [{"attribute": attribute, "op": op, "value": value}], "variant": variant}


TESTBED: list[tuple[Flag, str, Any, str]] = []

_equal_greater_lesser = _flag(  # "Semantic version operator numeric comparison"
    "equal-greater-lesser-version-flag",
    "none",
    [
        _rule("semverEq", "2.0.0", "equal"),
        _rule("semverGt", "2.0.0", "greater"),
        _rule("semverLt", "2.0.0", "lesser"),
    ],
    ["equal", "greater", "lesser", "none"],
)
TESTBED += [
    (_equal_greater_lesser, "version", v, out)
    for v, out in [
        ("2.0.0", "equal"),
        ("2.1.0", "greater"),
        ("1.9.0", "lesser"),
        ("2.0.0-alpha", "lesser"),
        ("2.0.0.0", "none"),
    ]
]
_major_minor = _flag(  # "Semantic version operator semantic comparison"
    "major-minor-version-flag",
    "none",
    [_rule("semverMatchMinor", "3.0.0", "minor"), _rule("semverMatchMajor", "3.0.0", "major")],
    ["minor", "major", "none"],
)
TESTBED += [
    (_major_minor, "version", v, out)
    for v, out in [("3.0.1", "minor"), ("3.1.0", "major"), ("4.0.0", "none")]
]
_v_prefix = _flag(  # "sem_ver v-prefix handling"
    "semver-v-prefix-flag", "no-match", [_rule("semverEq", "1.0.0", "match")], ["match", "no-match"]
)
TESTBED += [
    (_v_prefix, "version", v, out)
    for v, out in [
        ("1.0.0", "match"),
        ("v1.0.0", "match"),
        ("V1.0.0", "match"),
        ("2.0.0", "no-match"),
    ]
]
_partial = _flag(  # "sem_ver partial version handling" (target "1" written as "1.0.0")
    "semver-partial-version-flag",
    "no-match",
    [_rule("semverMatchMajor", "1.0.0", "match")],
    ["match", "no-match"],
)
TESTBED += [
    (_partial, "version", v, out)
    for v, out in [
        ("1.5.0", "match"),
        ("1.0.0", "match"),
        ("1.0", "match"),
        ("1", "match"),
        (1, "match"),
        ("2.0.0", "no-match"),
    ]
]
_build = _flag(  # "sem_ver build metadata ignored"
    "semver-build-metadata-flag",
    "no-match",
    [_rule("semverEq", "1.0.0+build", "match")],
    ["match", "no-match"],
)
TESTBED += [
    (_build, "version", v, out)
    for v, out in [("1.0.0", "match"), ("1.0.0+other", "match"), ("2.0.0", "no-match")]
]
_starts_ends = _flag(  # "Substring operators"
    "starts-ends-flag",
    "none",
    [_rule("startsWith", "abc", "prefix", "id"), _rule("endsWith", "xyz", "postfix", "id")],
    ["prefix", "postfix", "none"],
)
TESTBED += [
    (_starts_ends, "id", v, out)
    for v, out in [
        ("abcdef", "prefix"),
        ("uvwxyz", "postfix"),
        ("abcxyz", "prefix"),
        ("lmnopq", "none"),
        ("3", "none"),
    ]
]


@pytest.mark.parametrize(("flag", "attribute", "value", "variant"), TESTBED)
def test_flagd_testbed_examples(flag: Flag, attribute: str, value: Any, variant: str) -> None:
    result = evaluate(flag, None, {attribute: value})
    assert result.variant == variant
    assert result.reason == (
        Reason.DEFAULT if variant == flag.default_variant else "TARGETING_MATCH"
    )


def test_flagd_go_fallback_without_bucketing_value() -> None:
    # flagd core/pkg/evaluator/fractional_test.go, "fallback to default variant if no email
    # provided": a fractional with nothing to hash serves the default variant, reason DEFAULT.
    flag = parse_flag(
        "headerColor",
        {
            "variants": {
                "red": "#FF0000",
                "blue": "#0000FF",
                "green": "#00FF00",
                "yellow": "#FFFF00",
            },
            "defaultVariant": "red",
            "targeting": [
                {
                    "split": [
                        {"variant": c, "weight": 25} for c in ("red", "blue", "green", "yellow")
                    ]
                }
            ],
        },
    )
    result = evaluate(flag, None, {})
    assert (result.variant, result.value, result.reason) == ("red", "#FF0000", Reason.DEFAULT)
