"""Rendering flags as flagd's flag-definition document (the ``flags.json`` of ``ferry-flags``).

An OpenFeature SDK with the flagd provider in file mode reads this file unchanged, so each Ferry
construct is translated into the JSONLogic that makes flagd answer what ``evaluate`` answers:

==========================  ==============================================================
Ferry                        flagd targeting (JSONLogic + flagd operators)
==========================  ==============================================================
ordered rules                nested ``{"if": [cond, outcome, <next rule>]}``, last else ``null``
                             (null makes flagd serve ``defaultVariant`` with reason DEFAULT)
``when`` (AND)               ``{"and": [...]}`` (a single clause stands alone)
attribute ``a``              ``{"var": "a"}`` (dots walk nested objects in both)
``equals v``                 ``{"===": [var, v]}`` (strict: ``"1"`` never equals ``1``)
``notEquals v``              ``!== null`` and ``{"!==": [var, v]}``
``in [v1, v2]``              ``{"or": [{"===": [var, v1]}, {"===": [var, v2]}]}``
``notIn [v1, v2]``           ``!== null`` and ``!==`` each value
``startsWith``/``endsWith``  ``starts_with`` / ``ends_with``
``contains s``               ``{"starts_with": [var, ""]}`` and ``{"in": ["s", var]}``
``semverEq … semverLe``      ``{"sem_ver": [var, "=", "1.2.3"]}`` with ``= != > >= < <=``
``semverMatchMajor/Minor``   ``sem_ver`` with ``^`` / ``~``
``gt gte lt lte``            ``!== null`` and ``> >= < <=``
``variant: x``               ``"x"``
``split``                    ``{"fractional": [["on", 25], ["off", 75]]}``
``split`` + ``bucketBy: a``  ``{"if": [<a is a non-empty string>, {"fractional":
                             [{"cat": [{"var": "$flagd.flagKey"}, {"var": "a"}]}, ...]}, null]}``
==========================  ==============================================================

Why the ``!== null`` guards: JSONLogic reads a missing attribute as null, and ``null !== "x"`` is
true and ``null < 5`` is true (null coerces to 0), whereas a Ferry condition on a missing
attribute is false. ``in`` is spelled as an ``or`` of ``===`` because flagd's published schema
does not admit a literal array as an operand.

A plain ``split`` renders ``fractional`` without a bucketing expression (the shorthand), so each
provider hashes the flag key and targeting key the way its generation does (``flagKey +
targetingKey`` in flagd-v2, the CBOR array ``[flagKey, targetingKey]`` in flagd-v3): the same
document serves both generations, and ``evaluate`` is told which one to follow. Without a
targeting key ``fractional`` yields null, and flagd serves the default variant with reason
DEFAULT, as ``evaluate`` does.

``bucketBy`` salts the attribute with the flag key, as flagd's documentation recommends, so two
flags bucketing by the same attribute still split independently. It is guarded so that only a
non-empty string is bucketed (``starts_with`` with an empty prefix is true exactly for strings,
in every flagd evaluator): JSONLogic's ``cat`` turns other values into text differently per
engine (a missing value is ``""`` in flagd's Go engine and ``"null"`` in the Python provider's),
so bucketing anything else would split users differently per provider. Anything else yields
null → the default variant, reason DEFAULT, as in ``evaluate``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .model import NUMERIC_OPS, SEMVER_OPS, Condition, Flag, Op, Rule

#: The published flag-definition schema the document declares (and is tested against).
SCHEMA_URI = "https://flagd.dev/schema/v0/flags.json"


def _clauses(cond: Condition) -> list[dict[str, Any]]:
    var = {"var": cond.attribute}
    present = {"!==": [var, None]}
    op, value = cond.op, cond.value
    if op is Op.EQUALS:
        return [{"===": [var, value]}]
    if op is Op.NOT_EQUALS:
        return [present, {"!==": [var, value]}]
    if op is Op.IN:
        assert isinstance(value, tuple)
        options = [{"===": [var, v]} for v in value]
        return options if len(options) == 1 else [{"or": options}]
    if op is Op.NOT_IN:
        assert isinstance(value, tuple)
        return [present, *({"!==": [var, v]} for v in value)]
    if op is Op.STARTS_WITH:
        return [{"starts_with": [var, value]}]
    if op is Op.ENDS_WITH:
        return [{"ends_with": [var, value]}]
    if op is Op.CONTAINS:
        # JSONLogic's "in" on a string is a substring test; the starts_with guard keeps every
        # other type (numbers, lists, null) out, since the engines treat those differently
        return [{"starts_with": [var, ""]}, {"in": [value, var]}]
    if op in SEMVER_OPS:
        return [{"sem_ver": [var, SEMVER_OPS[op], value]}]
    if op in NUMERIC_OPS:
        return [present, {NUMERIC_OPS[op]: [var, value]}]
    raise AssertionError(f"unhandled operator {op}")


def _outcome(rule: Rule) -> Any:
    if rule.split is None:
        return rule.variant
    buckets = [[e.variant, e.weight] for e in rule.split]
    if rule.bucket_by is None:
        return {"fractional": buckets}
    var = {"var": rule.bucket_by}
    is_named = {"and": [{"starts_with": [var, ""]}, {"!==": [var, ""]}]}
    salted = {"cat": [{"var": "$flagd.flagKey"}, var]}
    return {"if": [is_named, {"fractional": [salted, *buckets]}, None]}


def targeting(flag: Flag) -> dict[str, Any] | None:
    """The JSONLogic of ``flag``'s rules, or None when it has none (flagd: reason STATIC)."""
    if not flag.rules:
        return None
    expr: Any = None
    for rule in reversed(flag.rules):
        clauses = [c for cond in rule.when for c in _clauses(cond)]
        if not clauses:
            expr = _outcome(rule)  # unconditional: later rules are unreachable, as in evaluate
            continue
        test = clauses[0] if len(clauses) == 1 else {"and": clauses}
        expr = {"if": [test, _outcome(rule), expr]}
    if not isinstance(expr, dict):
        # A bare variant name is not a valid targeting object; an always-true `if` is.
        expr = {"if": [True, expr, None]}
    return dict(expr)


def flag_definition(flag: Flag) -> dict[str, Any]:
    """One entry of ``flags``: state, variants, defaultVariant and (if any) targeting."""
    out: dict[str, Any] = {
        "state": "ENABLED" if flag.enabled else "DISABLED",
        "variants": copy.deepcopy(dict(flag.variants)),
        "defaultVariant": flag.default_variant,
    }
    rules = targeting(flag)
    if rules is not None:
        out["targeting"] = rules
    return out


def to_flagd(flags: Mapping[str, Flag]) -> dict[str, Any]:
    """The whole ``flags.json`` document for one namespace, flags in key order.

    Each mapping key must be its flag's ``key``: split bucketing hashes the key, so a flag
    published under another name would bucket users differently from ``evaluate``.
    """
    for key, flag in flags.items():
        if key != flag.key:
            raise ValueError(f"flag {flag.key!r} is published as {key!r}; keys must match")
    return {
        "$schema": SCHEMA_URI,
        "flags": {key: flag_definition(flags[key]) for key in sorted(flags)},
    }
