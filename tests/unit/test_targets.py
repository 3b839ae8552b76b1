"""Where an entry's ConfigMap goes, and the namespace opt-in that guards it."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.domain.targets import (
    TargetPlan,
    accepts,
    desired_namespaces,
    object_name,
    selector_matches,
)

LABELS = {"team": "payments", "env": "prod"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        (None, False),
        ({"matchLabels": {"team": "payments"}}, True),
        ({"matchLabels": {"team": "search"}}, False),
        ({"matchLabels": {"team": "payments", "env": "dev"}}, False),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, False),
        ({"matchExpressions": [{"key": "team", "operator": "Bogus"}]}, False),
        (
            {
                "matchLabels": {"team": "payments"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}],
            },
            False,
        ),
    ],
)
def test_selector_matches(selector: Any, expected: bool) -> None:
    assert selector_matches(selector, LABELS) is expected


def test_empty_selector_matches_unlabelled() -> None:
    assert selector_matches({}, {}) is True
    assert selector_matches({"matchLabels": {}}, None) is True


def test_accepts_own_namespace_always() -> None:
    assert accepts("platform", "platform", {}, {})


def test_accepts_by_label() -> None:
    assert accepts("platform", "payments-prod", {"ferry.dev/accept": "true"}, None)
    assert not accepts("platform", "payments-prod", {"ferry.dev/accept": "yes"}, None)


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("platform", True),
        ("team-a,platform", True),
        (" team-a , platform ", True),
        ("team-a", False),
        ("plat", False),
        ("platform-2", False),
        ("*", False),  # not a wildcard
        ("", False),
    ],
)
def test_accepts_by_annotation(annotation: str, expected: bool) -> None:
    assert accepts("platform", "other", None, {"ferry.dev/accept-from": annotation}) is expected


def test_nothing_means_refused() -> None:
    assert not accepts("platform", "other", None, None)


NAMESPACES = [
    ("platform", {}, {}),
    ("payments-prod", {"team": "payments", "ferry.dev/accept": "true"}, {}),
    ("payments-dev", {"team": "payments"}, {}),
    ("payments-qa", {"team": "payments"}, {"ferry.dev/accept-from": "platform"}),
    ("search", {"team": "search"}, {}),
]


def test_no_target_means_own_namespace() -> None:
    assert desired_namespaces("platform", None, NAMESPACES) == TargetPlan(accepted=("platform",))
    assert desired_namespaces("platform", {"format": "env"}, NAMESPACES) == TargetPlan(
        accepted=("platform",)
    )


def test_selector_and_explicit_union() -> None:
    target = {
        "namespaces": ["search", "gone"],
        "namespaceSelector": {"matchLabels": {"team": "payments"}},
    }
    assert desired_namespaces("platform", target, NAMESPACES) == TargetPlan(
        accepted=("payments-prod", "payments-qa"),
        refused=("payments-dev", "search"),
        missing=("gone",),
    )


def test_explicit_own_namespace_plus_other() -> None:
    plan = desired_namespaces("platform", {"namespaces": ["platform", "payments-prod"]}, [])
    assert plan == TargetPlan(accepted=("platform",), missing=("payments-prod",))


def test_selector_everything() -> None:
    plan = desired_namespaces("platform", {"namespaceSelector": {}}, NAMESPACES)
    assert plan.accepted == ("payments-prod", "payments-qa", "platform")
    assert plan.refused == ("payments-dev", "search")


def test_object_name() -> None:
    assert object_name("payments-api", None) == "payments-api"
    assert object_name("payments-api", {"format": "env"}) == "payments-api"
    assert object_name("payments-api", {"name": "payments-config"}) == "payments-config"
