"""Admission checks for a FeatureFlag spec, and its conversion into a :class:`Flag`.

Everything is checked here, once, so that evaluation and rendering never meet a malformed flag,
and so that every flag Ferry accepts is one flagd also accepts and answers identically (same
variant types, full semantic versions, integer split weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ferry.domain.errors import Invalid, Violation

from .bucketing import GENERATIONS
from .evaluate import compile_flag
from .model import LIST_OPS, NUMERIC_OPS, SEMVER_OPS, Condition, Flag, Op, Rule, SplitEntry
from .semver import parse_strict

#: flagd-schemas caps numeric variants at the IEEE-754 safe-integer range.
MAX_SAFE_INTEGER = 2**53 - 1
#: A split is expressed in percent, as the issue and users think of rollouts.
SPLIT_TOTAL = 100

_SPEC_KEYS = {"state", "variants", "defaultVariant", "targeting", "target", "bucketing"}
_RULE_KEYS = {"when", "variant", "split", "bucketBy"}
_CONDITION_KEYS = {"attribute", "op", "value", "values"}
_SPLIT_KEYS = {"variant", "weight"}
_OPS = {op.value: op for op in Op}


def _json_kind(value: Any) -> str | None:
    """flagd's four variant types; None for what flagd cannot serve (null, arrays)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= MAX_SAFE_INTEGER
    )


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


def _unknown(obj: Mapping[str, Any], allowed: set[str], path: str) -> list[Violation]:
    return [
        Violation(f"{path}.{key}", f"unknown field; expected one of {', '.join(sorted(allowed))}")
        for key in obj
        if key not in allowed
    ]


def _check_variants(spec: Mapping[str, Any]) -> tuple[list[Violation], set[str]]:
    variants = spec.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        return [Violation("spec.variants", "must be a non-empty map of name to value")], set()
    out: list[Violation] = []
    kinds: dict[str, list[str]] = {}
    for name, value in variants.items():
        path = f"spec.variants.{name}"
        if not isinstance(name, str) or not name:
            out.append(Violation("spec.variants", "variant names must be non-empty strings"))
            continue
        if '"' in name:
            # flagd strips quotes from the targeting result before looking the variant up.
            out.append(Violation(path, "variant names must not contain '\"'"))
        kind = _json_kind(value)
        if kind is None:
            out.append(Violation(path, "must be a boolean, number, string or object"))
            continue
        if kind == "number" and not _is_number(value):
            out.append(Violation(path, f"numbers must be finite and within ±{MAX_SAFE_INTEGER}"))
        kinds.setdefault(kind, []).append(name)
    if len(kinds) > 1:
        summary = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(kinds.items()))
        out.append(Violation("spec.variants", f"all variants must have the same type ({summary})"))
    return out, {n for n in variants if isinstance(n, str) and n}


def _check_attribute(attribute: Any, path: str) -> list[Violation]:
    if not isinstance(attribute, str) or not attribute:
        return [Violation(path, "must be a non-empty string")]
    if attribute.startswith("$"):
        return [Violation(path, "names starting with '$' are reserved by flagd")]
    if any(not part for part in attribute.split(".")):
        return [Violation(path, "dotted path has an empty segment")]
    return []


def _check_condition(cond: Any, path: str) -> list[Violation]:
    if not isinstance(cond, Mapping):
        return [Violation(path, "must be an object with attribute, op and value or values")]
    out = _unknown(cond, _CONDITION_KEYS, path)
    out.extend(_check_attribute(cond.get("attribute"), f"{path}.attribute"))
    raw_op = cond.get("op")
    op = _OPS.get(raw_op) if isinstance(raw_op, str) else None
    if op is None:
        out.append(Violation(f"{path}.op", f"must be one of {', '.join(_OPS)}"))
        return out
    if op in LIST_OPS:
        if "value" in cond:
            out.append(Violation(f"{path}.value", f"{op} takes 'values' (a list), not 'value'"))
        values = cond.get("values")
        if not isinstance(values, list) or not values:
            out.append(Violation(f"{path}.values", "must be a non-empty list"))
        else:
            out.extend(
                Violation(f"{path}.values[{i}]", "must be a string, number or boolean")
                for i, v in enumerate(values)
                if not _is_scalar(v)
            )
        return out
    if "values" in cond:
        out.append(Violation(f"{path}.values", f"{op} takes 'value', not 'values'"))
    if "value" not in cond:
        out.append(Violation(f"{path}.value", "is required"))
        return out
    value = cond["value"]
    vpath = f"{path}.value"
    if op in (Op.EQUALS, Op.NOT_EQUALS):
        if not _is_scalar(value):
            out.append(Violation(vpath, "must be a string, number or boolean"))
    elif op in (Op.STARTS_WITH, Op.ENDS_WITH, Op.CONTAINS):
        if not isinstance(value, str):
            out.append(Violation(vpath, "must be a string"))
    elif op in SEMVER_OPS:
        if not isinstance(value, str) or parse_strict(value) is None:
            out.append(
                Violation(vpath, "must be a semantic version MAJOR.MINOR.PATCH[-pre][+build]")
            )
    elif op in NUMERIC_OPS and not _is_number(value):
        out.append(Violation(vpath, "must be a number"))
    return out


def _check_split(split: Any, path: str, names: set[str]) -> list[Violation]:
    """``names`` empty means the variants are themselves invalid: references are not judged."""
    if not isinstance(split, list) or len(split) < 2:
        return [Violation(path, "must list at least two {variant, weight} entries")]
    out: list[Violation] = []
    total = 0
    seen: set[str] = set()
    for i, entry in enumerate(split):
        epath = f"{path}[{i}]"
        if not isinstance(entry, Mapping):
            out.append(Violation(epath, "must be an object with variant and weight"))
            continue
        out.extend(_unknown(entry, _SPLIT_KEYS, epath))
        variant = entry.get("variant")
        if not isinstance(variant, str) or (names and variant not in names):
            out.append(Violation(f"{epath}.variant", f"unknown variant {variant!r}"))
        elif variant in seen:
            out.append(Violation(f"{epath}.variant", f"variant {variant!r} is listed twice"))
        else:
            seen.add(variant)
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            out.append(Violation(f"{epath}.weight", "must be a non-negative integer"))
        else:
            total += weight
    if not out and total != SPLIT_TOTAL:
        out.append(Violation(path, f"weights must sum to {SPLIT_TOTAL}, got {total}"))
    return out


def _check_rule(rule: Any, path: str, names: set[str]) -> list[Violation]:
    if not isinstance(rule, Mapping):
        return [Violation(path, "must be an object with when and variant or split")]
    out = _unknown(rule, _RULE_KEYS, path)
    when = rule.get("when", [])
    if not isinstance(when, list):
        out.append(Violation(f"{path}.when", "must be a list of conditions"))
    else:
        for i, cond in enumerate(when):
            out.extend(_check_condition(cond, f"{path}.when[{i}]"))
    has_variant, has_split = "variant" in rule, "split" in rule
    if has_variant == has_split:
        out.append(Violation(path, "needs exactly one of variant or split"))
    elif has_variant:
        if not isinstance(rule["variant"], str) or (names and rule["variant"] not in names):
            out.append(Violation(f"{path}.variant", f"unknown variant {rule['variant']!r}"))
    else:
        out.extend(_check_split(rule["split"], f"{path}.split", names))
    if "bucketBy" in rule:
        bpath = f"{path}.bucketBy"
        if not has_split:
            out.append(Violation(bpath, "only a rule with a split buckets"))
        elif rule["bucketBy"] == "targetingKey":
            out.append(Violation(bpath, "omit bucketBy to bucket by the targeting key"))
        else:
            out.extend(_check_attribute(rule["bucketBy"], bpath))
    return out


def check_flag(spec: Any) -> list[Violation]:
    """Every reason ``spec`` (a FeatureFlag's ``spec``) cannot be served; empty when it can."""
    if not isinstance(spec, Mapping):
        return [Violation("spec", "must be an object")]
    out = _unknown(spec, _SPEC_KEYS, "spec")
    state = spec.get("state", "ENABLED")
    if state not in ("ENABLED", "DISABLED"):
        out.append(Violation("spec.state", "must be ENABLED or DISABLED"))
    variant_violations, names = _check_variants(spec)
    out.extend(variant_violations)
    default = spec.get("defaultVariant")
    if not isinstance(default, str):
        out.append(Violation("spec.defaultVariant", "is required and must be a variant name"))
    elif names and default not in names:
        out.append(Violation("spec.defaultVariant", f"unknown variant {default!r}"))
    targeting = spec.get("targeting", [])
    if not isinstance(targeting, list):
        out.append(Violation("spec.targeting", "must be a list of rules"))
    else:
        for i, rule in enumerate(targeting):
            out.extend(_check_rule(rule, f"spec.targeting[{i}]", names))
    target = spec.get("target")
    if target is not None and not isinstance(target, Mapping):
        out.append(Violation("spec.target", "must be an object"))
    bucketing = spec.get("bucketing")
    if "bucketing" in spec and (not isinstance(bucketing, str) or bucketing not in GENERATIONS):
        choices = ", ".join(sorted(GENERATIONS))
        out.append(Violation("spec.bucketing", f"must be one of {choices}, got {bucketing!r}"))
    return out


def _condition(cond: Mapping[str, Any]) -> Condition:
    op = Op(cond["op"])
    value = tuple(cond["values"]) if op in LIST_OPS else cond["value"]
    return Condition(attribute=cond["attribute"], op=op, value=value)


def _rule(rule: Mapping[str, Any]) -> Rule:
    when = tuple(_condition(c) for c in rule.get("when", []))
    if "split" in rule:
        split = tuple(SplitEntry(e["variant"], e["weight"]) for e in rule["split"])
        return Rule(when=when, split=split, bucket_by=rule.get("bucketBy"))
    return Rule(when=when, variant=rule["variant"])


def parse_flag(name: str, spec: Any) -> Flag:
    """A servable :class:`Flag` keyed ``name``, or ``Invalid`` listing every violation.

    ``name`` is the flag key clients evaluate and the seed of split bucketing, so renaming a
    flag reshuffles its splits, exactly as in flagd.
    """
    violations = check_flag(spec)
    if not isinstance(name, str) or not name:
        violations.append(Violation("metadata.name", "flag key must be a non-empty string"))
    if violations:
        raise Invalid("InvalidFeatureFlag", violations)
    flag = Flag(
        key=name,
        enabled=spec.get("state", "ENABLED") == "ENABLED",
        variants=dict(spec["variants"]),
        default_variant=spec["defaultVariant"],
        rules=tuple(_rule(r) for r in spec.get("targeting", [])),
        target=spec.get("target"),
    )
    object.__setattr__(flag, "compiled", compile_flag(flag))
    return flag
