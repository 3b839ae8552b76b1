"""Evaluation tables: every operator, every reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from ferry.domain.flags import ErrorCode, Evaluation, Reason, evaluate, parse_flag


def one_rule(cond: dict[str, Any]) -> Any:
    """A flag serving "hit" when ``cond`` holds, "miss" (the default) otherwise."""
    return parse_flag(
        "f",
        {
            "variants": {"hit": "HIT", "miss": "MISS"},
            "defaultVariant": "miss",
            "targeting": [{"when": [cond], "variant": "hit"}],
        },
    )


def hits(cond: dict[str, Any], attributes: Mapping[str, Any], key: str | None = "k") -> bool:
    result = evaluate(one_rule(cond), key, attributes)
    assert result.reason in (Reason.TARGETING_MATCH, Reason.DEFAULT)
    return result.variant == "hit"


class _Missing:
    """The attribute is absent (a stable repr keeps the test ids the same in every process)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()

# (condition, attribute value or MISSING, expected match)
TABLE: list[tuple[dict[str, Any], Any, bool]] = [
    # equals: strict JSON equality
    ({"op": "equals", "value": "pro"}, "pro", True),
    ({"op": "equals", "value": "pro"}, "free", False),
    ({"op": "equals", "value": "pro"}, MISSING, False),
    ({"op": "equals", "value": 1}, 1.0, True),
    ({"op": "equals", "value": 1}, "1", False),
    ({"op": "equals", "value": 1}, True, False),
    ({"op": "equals", "value": True}, True, True),
    ({"op": "equals", "value": True}, 1, False),
    ({"op": "equals", "value": "1"}, 1, False),
    # notEquals: a missing attribute is not "not equal"
    ({"op": "notEquals", "value": "pro"}, "free", True),
    ({"op": "notEquals", "value": "pro"}, "pro", False),
    ({"op": "notEquals", "value": "pro"}, MISSING, False),
    ({"op": "notEquals", "value": "pro"}, None, False),
    ({"op": "notEquals", "value": 1}, "1", True),
    # in / notIn
    ({"op": "in", "values": ["eu-west-1", "eu-central-1"]}, "eu-central-1", True),
    ({"op": "in", "values": ["eu-west-1", "eu-central-1"]}, "us-east-1", False),
    ({"op": "in", "values": ["eu-west-1"]}, MISSING, False),
    ({"op": "in", "values": [1, 2, True]}, 2.0, True),
    ({"op": "in", "values": [1, 2]}, True, False),
    ({"op": "in", "values": [True]}, 1, False),
    ({"op": "in", "values": ["1"]}, 1, False),
    ({"op": "notIn", "values": ["eu-west-1"]}, "us-east-1", True),
    ({"op": "notIn", "values": ["eu-west-1"]}, "eu-west-1", False),
    ({"op": "notIn", "values": ["eu-west-1"]}, MISSING, False),
    # startsWith / endsWith: strings only
    ({"op": "startsWith", "value": "abc"}, "abcdef", True),
    ({"op": "startsWith", "value": "abc"}, "xabc", False),
    ({"op": "startsWith", "value": "1"}, 123, False),
    ({"op": "startsWith", "value": "abc"}, MISSING, False),
    ({"op": "endsWith", "value": "@example.com"}, "ann@example.com", True),
    ({"op": "endsWith", "value": "@example.com"}, "ann@example.org", False),
    ({"op": "endsWith", "value": "3"}, 123, False),
    # contains: a substring of a string attribute
    ({"op": "contains", "value": "@corp."}, "ann@corp.example", True),
    ({"op": "contains", "value": "@corp."}, "ann@example.com", False),
    ({"op": "contains", "value": ""}, "", True),
    ({"op": "contains", "value": "2"}, 123, False),
    ({"op": "contains", "value": "a"}, ["a"], False),
    ({"op": "contains", "value": "a"}, MISSING, False),
    # semantic versions
    ({"op": "semverEq", "value": "2.0.0"}, "2.0.0", True),
    ({"op": "semverEq", "value": "2.0.0"}, "v2.0.0", True),
    ({"op": "semverEq", "value": "2.0.0"}, "2.0.0+build.7", True),
    ({"op": "semverEq", "value": "2.0.0"}, "2.0.0-rc.1", False),
    ({"op": "semverNe", "value": "2.0.0"}, "2.0.1", True),
    ({"op": "semverNe", "value": "2.0.0"}, "2.0.0", False),
    ({"op": "semverNe", "value": "2.0.0"}, "not-a-version", False),
    ({"op": "semverGt", "value": "2.0.0"}, "2.1.0", True),
    ({"op": "semverGt", "value": "2.0.0"}, "2.0.0", False),
    ({"op": "semverGt", "value": "1.9.0"}, "1.10.0", True),
    ({"op": "semverGe", "value": "2.0.0"}, "2.0.0", True),
    ({"op": "semverGe", "value": "2.0.0"}, "2.0.0-alpha", False),
    ({"op": "semverLt", "value": "2.0.0"}, "2.0.0-alpha", True),
    ({"op": "semverLt", "value": "1.0.0-beta"}, "1.0.0-alpha.9", True),
    ({"op": "semverLt", "value": "1.0.0-alpha.10"}, "1.0.0-alpha.9", True),
    ({"op": "semverLt", "value": "1.0.0-alpha.beta"}, "1.0.0-alpha", True),
    ({"op": "semverLt", "value": "1.0.0-alpha"}, "1.0.0-alpha.1", False),
    ({"op": "semverLe", "value": "2.0.0"}, "2.0.0", True),
    ({"op": "semverLe", "value": "2.0.0"}, "2.0.1", False),
    ({"op": "semverLe", "value": "2.0.0"}, "2.0.0.0", False),
    ({"op": "semverLe", "value": "2.0.0"}, MISSING, False),
    ({"op": "semverLe", "value": "2.0.0"}, True, False),
    ({"op": "semverMatchMajor", "value": "3.0.0"}, "3.9.1", True),
    ({"op": "semverMatchMajor", "value": "3.0.0"}, "4.0.0", False),
    ({"op": "semverMatchMajor", "value": "0.1.0"}, "0.2.0", True),
    ({"op": "semverMatchMinor", "value": "3.0.0"}, "3.0.9", True),
    ({"op": "semverMatchMinor", "value": "3.0.0"}, "3.1.0", False),
    ({"op": "semverGe", "value": "1.0.0"}, 1, True),
    ({"op": "semverGe", "value": "1.1.0"}, "1.1", True),
    ({"op": "semverGe", "value": "1.0.0"}, "01.0.0", False),
    ({"op": "semverGe", "value": "1.0.0"}, "1.2-beta", False),
    # numeric: JSONLogic coercion as flagd's engine does it
    ({"op": "gt", "value": 18}, 21, True),
    ({"op": "gt", "value": 18}, 18, False),
    ({"op": "gt", "value": 18}, "21", True),
    ({"op": "gt", "value": 18}, "21 years", False),
    ({"op": "gt", "value": 18}, MISSING, False),
    ({"op": "gt", "value": 0}, True, True),
    ({"op": "gt", "value": 0}, [1], False),
    ({"op": "gte", "value": 18}, 18, True),
    ({"op": "gte", "value": 18.5}, 18, False),
    ({"op": "lt", "value": 5}, 4.99, True),
    ({"op": "lt", "value": 5}, 5, False),
    ({"op": "lt", "value": 5}, MISSING, False),
    ({"op": "lt", "value": 5}, None, False),
    ({"op": "lt", "value": 5}, "", True),
    ({"op": "lt", "value": 5}, "1e2", False),
    ({"op": "lte", "value": 5}, 5, True),
    ({"op": "lte", "value": 5}, {"n": 1}, False),
]


@pytest.mark.parametrize(("cond", "value", "expected"), TABLE, ids=lambda x: repr(x)[:40])
def test_operator_table(cond: dict[str, Any], value: Any, expected: bool) -> None:
    attributes = {} if value is MISSING else {"attr": value}
    assert hits({"attribute": "attr", **cond}, attributes) is expected


def test_every_operator_is_in_the_table() -> None:
    from ferry.domain.flags import Op

    assert {c["op"] for c, _, _ in TABLE} == {op.value for op in Op}


def test_dotted_attribute_walks_nested_objects() -> None:
    cond = {"attribute": "user.plan", "op": "equals", "value": "pro"}
    assert hits(cond, {"user": {"plan": "pro"}})
    assert not hits(cond, {"user": "pro"})
    assert not hits(cond, {"user.plan": "pro"})
    assert hits({"attribute": "tags.1", "op": "equals", "value": "b"}, {"tags": ["a", "b"]})


def test_targeting_key_is_an_attribute() -> None:
    cond = {"attribute": "targetingKey", "op": "startsWith", "value": "internal-"}
    assert hits(cond, {}, key="internal-7")
    assert not hits(cond, {}, key="user-7")


def test_conditions_are_anded_and_rules_ordered() -> None:
    flag = parse_flag(
        "f",
        {
            "variants": {"a": 1, "b": 2, "c": 3},
            "defaultVariant": "c",
            "targeting": [
                {
                    "when": [
                        {"attribute": "plan", "op": "equals", "value": "pro"},
                        {"attribute": "age", "op": "gte", "value": 18},
                    ],
                    "variant": "a",
                },
                {"when": [{"attribute": "plan", "op": "equals", "value": "pro"}], "variant": "b"},
            ],
        },
    )
    assert evaluate(flag, "k", {"plan": "pro", "age": 30}) == Evaluation("a", 1, "TARGETING_MATCH")
    assert evaluate(flag, "k", {"plan": "pro", "age": 10}).variant == "b"
    assert evaluate(flag, "k", {"plan": "free", "age": 30}) == Evaluation("c", 3, "DEFAULT")


SPEC: dict[str, Any] = {
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
}


@pytest.mark.parametrize(
    ("spec_change", "key", "attributes", "expected"),
    [
        ({}, "u1", {"email": "a@example.com"}, Evaluation("on", True, Reason.TARGETING_MATCH)),
        ({}, "u1", {"email": "a@example.org"}, Evaluation("off", False, Reason.DEFAULT)),
        ({}, "u1", {}, Evaluation("off", False, Reason.DEFAULT)),
        ({"targeting": []}, "u1", {"email": "a@example.com"}, Evaluation("off", False, "STATIC")),
        (
            {"state": "DISABLED"},
            "u1",
            {"email": "a@example.com"},
            Evaluation(None, None, "DISABLED"),  # flagd: the app's code default
        ),
        # a split with no targeting key: flagd's fractional yields null → default, DEFAULT
        ({}, None, {"region": "eu-west-1"}, Evaluation("off", False, Reason.DEFAULT)),
        ({}, "", {"region": "eu-west-1"}, Evaluation("off", False, Reason.DEFAULT)),
        ({}, 42, {"region": "eu-west-1"}, Evaluation("off", False, Reason.DEFAULT)),
        ({}, "u1", ["not", "a", "mapping"], Evaluation(None, None, "ERROR", "INVALID_CONTEXT")),
    ],
)
def test_reasons(
    spec_change: dict[str, Any], key: Any, attributes: Any, expected: Evaluation
) -> None:
    flag = parse_flag("new-checkout", {**SPEC, **spec_change})
    assert evaluate(flag, key, attributes) == expected


def test_split_reason_and_both_variants_reachable() -> None:
    flag = parse_flag("new-checkout", SPEC)
    results = {evaluate(flag, f"user-{i}", {"region": "eu-west-1"}) for i in range(200)}
    assert results == {
        Evaluation("on", True, Reason.SPLIT),
        Evaluation("off", False, Reason.SPLIT),
    }


def test_unexpected_failure_is_an_error_not_an_exception() -> None:
    class Hostile(dict):  # type: ignore[type-arg]
        def get(self, *args: Any) -> Any:
            raise RuntimeError("boom")

    flag = parse_flag("new-checkout", SPEC)
    result = evaluate(flag, "u1", Hostile())
    assert (result.reason, result.error_code, result.variant) == ("ERROR", ErrorCode.GENERAL, None)


def test_unconditional_rule_always_matches() -> None:
    flag = parse_flag(
        "f",
        {
            "variants": {"a": "A", "b": "B"},
            "defaultVariant": "a",
            "targeting": [{"variant": "b"}, {"when": [], "variant": "a"}],
        },
    )
    assert evaluate(flag, None, {}) == Evaluation("b", "B", Reason.TARGETING_MATCH)
