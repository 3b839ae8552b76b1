"""Admission checks for FeatureFlag: every violation, by the path a user sees."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.domain.errors import Invalid
from ferry.domain.flags import check_flag, parse_flag

VALID: dict[str, Any] = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": [
        {
            "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
            "variant": "on",
        },
        {
            "when": [{"attribute": "region", "op": "in", "values": ["eu-west-1"]}],
            "split": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
        },
    ],
    "target": {"namespaceSelector": {"matchLabels": {"team": "payments"}}},
}


def paths(spec: Any) -> list[str]:
    return sorted(v.path for v in check_flag(spec))


def with_rule(rule: Any) -> dict[str, Any]:
    return {**VALID, "targeting": [VALID["targeting"][0], rule]}


def with_condition(cond: Any) -> dict[str, Any]:
    return with_rule({"when": [cond], "variant": "on"})


def test_valid_spec_has_no_violations() -> None:
    assert check_flag(VALID) == []
    flag = parse_flag("new-checkout", VALID)
    assert flag.key == "new-checkout" and flag.enabled and len(flag.rules) == 2
    assert flag.target == VALID["target"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nope", ["spec"]),
        ({**VALID, "variants": {}}, ["spec.variants"]),
        ({**VALID, "variants": None}, ["spec.variants"]),
        ({**VALID, "variants": {"on": True, "off": "no"}}, ["spec.variants"]),
        ({**VALID, "variants": {"on": [1], "off": False}}, ["spec.variants.on"]),
        ({**VALID, "variants": {"on": None, "off": False}}, ["spec.variants.on"]),
        ({**VALID, "variants": {"on": 2**60, "off": 1}}, ["spec.variants.on"]),
        (
            {**VALID, "variants": {'o"n': True, "off": False}},
            [
                'spec.variants.o"n',
                *["spec.targeting[0].variant", "spec.targeting[1].split[0].variant"],
            ],
        ),
        ({k: v for k, v in VALID.items() if k != "defaultVariant"}, ["spec.defaultVariant"]),
        ({**VALID, "defaultVariant": "maybe"}, ["spec.defaultVariant"]),
        ({**VALID, "state": "ON"}, ["spec.state"]),
        ({**VALID, "targeting": {"when": []}}, ["spec.targeting"]),
        ({**VALID, "target": "payments"}, ["spec.target"]),
        ({**VALID, "rules": []}, ["spec.rules"]),
    ],
)
def test_spec_level_violations(spec: Any, expected: list[str]) -> None:
    assert paths(spec) == sorted(expected)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("on", ["spec.targeting[1]"]),
        ({"when": []}, ["spec.targeting[1]"]),
        ({"variant": "on", "split": []}, ["spec.targeting[1]"]),
        ({"variant": "maybe"}, ["spec.targeting[1].variant"]),
        ({"variant": "on", "when": {}}, ["spec.targeting[1].when"]),
        ({"variant": "on", "then": "x"}, ["spec.targeting[1].then"]),
        ({"split": [{"variant": "on", "weight": 100}]}, ["spec.targeting[1].split"]),
        (
            {"split": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 70}]},
            ["spec.targeting[1].split"],
        ),
        (
            {"split": [{"variant": "on", "weight": 25}, {"variant": "nope", "weight": 75}]},
            ["spec.targeting[1].split[1].variant"],
        ),
        (
            {"split": [{"variant": "on", "weight": 50}, {"variant": "on", "weight": 50}]},
            ["spec.targeting[1].split[1].variant"],
        ),
        (
            {"split": [{"variant": "on", "weight": 25.5}, {"variant": "off", "weight": 74.5}]},
            ["spec.targeting[1].split[0].weight", "spec.targeting[1].split[1].weight"],
        ),
        (
            {"split": [{"variant": "on", "weight": -25}, {"variant": "off", "weight": 125}]},
            ["spec.targeting[1].split[0].weight"],
        ),
        (
            {"split": [{"variant": "on", "weight": True}, {"variant": "off", "weight": 99}]},
            ["spec.targeting[1].split[0].weight"],
        ),
        ({"split": ["on", "off"]}, ["spec.targeting[1].split[0]", "spec.targeting[1].split[1]"]),
        (
            {"split": [{"variant": "on", "weight": 0, "x": 1}, {"variant": "off", "weight": 100}]},
            ["spec.targeting[1].split[0].x"],
        ),
    ],
)
def test_rule_violations(rule: Any, expected: list[str]) -> None:
    assert paths(with_rule(rule)) == sorted(expected)


P = "spec.targeting[1].when[0]"


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ("email", [P]),
        ({"op": "equals", "value": 1}, [f"{P}.attribute"]),
        ({"attribute": "", "op": "equals", "value": 1}, [f"{P}.attribute"]),
        ({"attribute": "$flagd.flagKey", "op": "equals", "value": 1}, [f"{P}.attribute"]),
        ({"attribute": "user..plan", "op": "equals", "value": 1}, [f"{P}.attribute"]),
        ({"attribute": "a", "op": "matches", "value": "x"}, [f"{P}.op"]),
        ({"attribute": "a", "value": "x"}, [f"{P}.op"]),
        ({"attribute": "a", "op": "equals"}, [f"{P}.value"]),
        ({"attribute": "a", "op": "equals", "value": None}, [f"{P}.value"]),
        ({"attribute": "a", "op": "equals", "value": {"x": 1}}, [f"{P}.value"]),
        ({"attribute": "a", "op": "equals", "value": float("nan")}, [f"{P}.value"]),
        ({"attribute": "a", "op": "equals", "values": ["x"]}, [f"{P}.value", f"{P}.values"]),
        ({"attribute": "a", "op": "in", "value": "x"}, [f"{P}.value", f"{P}.values"]),
        ({"attribute": "a", "op": "in", "values": []}, [f"{P}.values"]),
        ({"attribute": "a", "op": "notIn", "values": "x"}, [f"{P}.values"]),
        (
            {"attribute": "a", "op": "in", "values": ["x", None, [1]]},
            [f"{P}.values[1]", f"{P}.values[2]"],
        ),
        ({"attribute": "a", "op": "startsWith", "value": 1}, [f"{P}.value"]),
        ({"attribute": "a", "op": "endsWith", "value": None}, [f"{P}.value"]),
        ({"attribute": "a", "op": "semverGe", "value": "v1.2.3"}, [f"{P}.value"]),
        ({"attribute": "a", "op": "semverGe", "value": "1.2"}, [f"{P}.value"]),
        ({"attribute": "a", "op": "semverEq", "value": "01.2.3"}, [f"{P}.value"]),
        ({"attribute": "a", "op": "semverLt", "value": 1}, [f"{P}.value"]),
        ({"attribute": "a", "op": "gt", "value": "10"}, [f"{P}.value"]),
        ({"attribute": "a", "op": "lte", "value": True}, [f"{P}.value"]),
        ({"attribute": "a", "op": "gte", "value": float("inf")}, [f"{P}.value"]),
        ({"attribute": "a", "op": "equals", "value": 1, "negate": True}, [f"{P}.negate"]),
    ],
)
def test_condition_violations(cond: Any, expected: list[str]) -> None:
    assert paths(with_condition(cond)) == sorted(expected)


@pytest.mark.parametrize(
    "cond",
    [
        {"attribute": "a", "op": "semverGe", "value": "1.2.3-rc.1+build.5"},
        {"attribute": "user.plan", "op": "in", "values": ["pro", 1, True]},
        {"attribute": "targetingKey", "op": "startsWith", "value": ""},
        {"attribute": "a", "op": "lt", "value": -2.5},
    ],
)
def test_valid_conditions(cond: dict[str, Any]) -> None:
    assert paths(with_condition(cond)) == []


def test_parse_flag_reports_every_violation_at_once() -> None:
    spec = {
        "variants": {"on": True, "off": False},
        "defaultVariant": "maybe",
        "targeting": [
            {"when": [{"attribute": "a", "op": "gt", "value": "x"}], "variant": "nope"},
            {"split": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 30}]},
        ],
    }
    with pytest.raises(Invalid) as excinfo:
        parse_flag("f", spec)
    assert excinfo.value.reason == "InvalidFeatureFlag"
    assert [v.path for v in excinfo.value.violations] == [
        "spec.defaultVariant",
        "spec.targeting[0].variant",
        "spec.targeting[0].when[0].value",
        "spec.targeting[1].split",
    ]
    assert "weights must sum to 100, got 60" in excinfo.value.message


def test_parse_flag_needs_a_key() -> None:
    with pytest.raises(Invalid) as excinfo:
        parse_flag("", VALID)
    assert [v.path for v in excinfo.value.violations] == ["metadata.name"]
