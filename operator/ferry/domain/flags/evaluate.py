"""Evaluating a flag for one caller, in pure Python, as flagd would.

Rules are compiled once per flag into closures and precomputed answers, so that an evaluation is a
few attribute lookups, comparisons and at most one MurmurHash: the read API answers many
evaluations per request and must not re-interpret the spec each time. Every answer object is
built at compile time; evaluating allocates nothing.

Semantics kept identical to the JSONLogic that ``flagd.py`` emits (see there for the mapping):

* equality is strict, JSON-typed: ``1`` equals ``1.0`` but not ``"1"`` or ``true``;
* a missing or null attribute makes a condition false, negated ones included;
* numeric comparisons coerce as flagd's JSONLogic engine does: numeric strings are numbers, a
  blank string is 0, booleans are 1 and 0; lists, objects and other strings never match;
* ``startsWith``/``endsWith``/``contains`` need a string attribute;
* dotted attributes (``user.plan``) walk nested objects, like JSONLogic's ``var``; the attribute
  ``targetingKey`` is the targeting key, which flagd puts in the context under that name;
* a split buckets as flagd's ``fractional`` does in the generation the caller names
  (:mod:`.bucketing`): both generations' hashers are built at compile time, so choosing one costs
  a dict lookup.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from .bucketing import DEFAULT_BUCKETING, GENERATIONS, Hasher, bucket_index, hasher
from .model import (
    NUMERIC_OPS,
    SEMVER_OPS,
    Condition,
    ErrorCode,
    Evaluation,
    Flag,
    Op,
    Reason,
    Rule,
    Scalar,
)
from .semver import COMPARATORS, parse_attribute, parse_strict

Test = Callable[[Any], bool]
Predicate = Callable[[Mapping[str, Any], "str | None"], bool]

# What Go's strconv.ParseFloat reads in decimal (no surrounding blanks, no digit underscores).
_NUMERIC_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)", re.IGNORECASE
)

_INVALID_CONTEXT = Evaluation(None, None, Reason.ERROR, ErrorCode.INVALID_CONTEXT)
_GENERAL_ERROR = Evaluation(None, None, Reason.ERROR, ErrorCode.GENERAL)
# flagd resolves a disabled flag to no variant: the app's code default is used (Go core
# ``resolve``: zero value and variant ""; the Python provider: variant None, the default value).
_DISABLED = Evaluation(None, None, Reason.DISABLED)


@dataclass(frozen=True, slots=True)
class _Split:
    """``by``: the attribute path bucketed on (``bucketBy``), None for the targeting key.
    ``hashers``: generation → hash of the bucketing value, the flag key already folded in."""

    cumulative: tuple[int, ...]
    answers: tuple[Evaluation, ...]
    by: tuple[str, ...] | None
    hashers: Mapping[str, Hasher]


@dataclass(frozen=True, slots=True)
class Compiled:
    """``fixed`` short-circuits DISABLED and STATIC flags; otherwise ``rules`` are walked."""

    fixed: Evaluation | None
    default: Evaluation
    flag_key: str
    rules: tuple[tuple[tuple[Predicate, ...], Evaluation | None, _Split | None], ...]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and v.__class__ is not bool


def _equals(want: Scalar) -> Test:
    if isinstance(want, bool):
        return lambda v: v is want
    if isinstance(want, str):
        return lambda v: isinstance(v, str) and v == want
    return lambda v: _is_number(v) and v == want


def _member(values: tuple[Scalar, ...]) -> Test:
    strs = frozenset(v for v in values if isinstance(v, str))
    bools = frozenset(v for v in values if isinstance(v, bool))
    nums = frozenset(v for v in values if _is_number(v))

    def test(v: Any) -> bool:
        if isinstance(v, str):
            return v in strs
        if isinstance(v, bool):
            return v in bools
        return _is_number(v) and v in nums

    return test


def _as_number(v: Any) -> float | None:
    """JSONLogic's ToNumber as flagd's Go engine has it, minus null (guarded) and NaN cases.

    Booleans are 1/0, a blank string is 0, a decimal string is its value; lists, objects and
    other strings are NaN there, which no comparison matches, so None here.
    """
    if v.__class__ is bool:
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return v
    if isinstance(v, str) and len(v) < 64:
        if not v.strip():
            return 0.0
        if _NUMERIC_TEXT.fullmatch(v):
            return float(v)
    return None


def _test(cond: Condition) -> Test:
    op, want = cond.op, cond.value
    if op is Op.EQUALS:
        return _equals(want)  # type: ignore[arg-type]
    if op is Op.NOT_EQUALS:
        eq = _equals(want)  # type: ignore[arg-type]
        return lambda v: v is not None and not eq(v)
    if op is Op.IN:
        return _member(want)  # type: ignore[arg-type]
    if op is Op.NOT_IN:
        member = _member(want)  # type: ignore[arg-type]
        return lambda v: v is not None and not member(v)
    if op is Op.STARTS_WITH:
        return lambda v: isinstance(v, str) and v.startswith(want)  # type: ignore[arg-type]
    if op is Op.ENDS_WITH:
        return lambda v: isinstance(v, str) and v.endswith(want)  # type: ignore[arg-type]
    if op is Op.CONTAINS:
        return lambda v: isinstance(v, str) and want in v  # type: ignore[operator]
    if op in SEMVER_OPS:
        cmp, target = COMPARATORS[SEMVER_OPS[op]], parse_strict(want)  # type: ignore[arg-type]

        def semver(v: Any) -> bool:
            key = parse_attribute(v)
            return key is not None and cmp(key, target)

        return semver
    if op in NUMERIC_OPS:
        number_cmp: Callable[[Any, Any], bool] = {
            Op.GT: operator.gt,
            Op.GTE: operator.ge,
            Op.LT: operator.lt,
            Op.LTE: operator.le,
        }[op]

        def numeric(v: Any) -> bool:
            n = _as_number(v)
            return n is not None and number_cmp(n, want)

        return numeric
    raise AssertionError(f"unhandled operator {op}")  # check_flag admits no other


def _walk(attributes: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    cur: Any = attributes
    for part in parts:
        if isinstance(cur, Mapping):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
        if cur is None:
            return None
    return cur


def _predicate(cond: Condition) -> Predicate:
    test, name = _test(cond), cond.attribute
    if name == "targetingKey":
        return lambda a, tk: test(tk if tk is not None else a.get(name))
    if "." not in name:
        return lambda a, tk: test(a.get(name))
    parts = tuple(name.split("."))
    return lambda a, tk: test(_walk(a, parts))


def _answer(flag: Flag, variant: str, reason: Reason) -> Evaluation:
    return Evaluation(variant, flag.variants[variant], reason)


def _compile_rule(
    flag: Flag, rule: Rule
) -> tuple[tuple[Predicate, ...], Evaluation | None, _Split | None]:
    preds = tuple(_predicate(c) for c in rule.when)
    if rule.split is None:
        assert rule.variant is not None
        return preds, _answer(flag, rule.variant, Reason.TARGETING_MATCH), None
    split = _Split(
        cumulative=tuple(accumulate(e.weight for e in rule.split)),
        answers=tuple(_answer(flag, e.variant, Reason.SPLIT) for e in rule.split),
        by=tuple(rule.bucket_by.split(".")) if rule.bucket_by else None,
        hashers={b: hasher(flag.key, b, shorthand=rule.bucket_by is None) for b in GENERATIONS},
    )
    return preds, None, split


def compile_flag(flag: Flag) -> Compiled:
    """Precompute every answer ``flag`` can give and the predicates that choose between them."""
    default = _answer(flag, flag.default_variant, Reason.DEFAULT)
    fixed = None
    if not flag.enabled:
        fixed = _DISABLED
    elif not flag.rules:
        fixed = _answer(flag, flag.default_variant, Reason.STATIC)
    rules = tuple(_compile_rule(flag, r) for r in flag.rules)
    return Compiled(fixed=fixed, default=default, flag_key=flag.key, rules=rules)


def evaluate(
    flag: Flag,
    targeting_key: str | None,
    attributes: Mapping[str, Any],
    bucketing: str = DEFAULT_BUCKETING,
) -> Evaluation:
    """The variant, value and reason flagd would give this caller.

    ``bucketing`` is the generation of flagd's ``fractional`` whose buckets a split follows
    (``flagd-v2`` or ``flagd-v3``; see :func:`.bucketing.bucketing_for` for which one a
    FeatureFlag uses). The front doors always pass it; the default is flagd's current
    specification. An unknown value raises ``ValueError`` (a caller's mistake, not the flag's).

    Reasons: DISABLED (state DISABLED: no variant and no value, so the caller uses its own code
    default, exactly what flagd's providers do), STATIC (no rules), TARGETING_MATCH (a rule's
    variant), SPLIT (a rule's split; flagd itself reports TARGETING_MATCH there, with the same
    variant), DEFAULT (no rule matched, or a split matched but has nothing to bucket on — flagd's
    ``fractional`` then yields null and the default variant is served), ERROR (attributes is not
    a mapping, or evaluation failed; variant and value are then None).

    A targeting key that is not a non-empty string counts as absent, as every flagd evaluator
    treats it (Go core v0.16, ``openfeature-flagd-core`` 2.x); so does a ``bucketBy`` attribute
    that is missing, empty or not a string, which the rendered ``flags.json`` guards the same
    way. A bucketing value that is not valid Unicode (a lone surrogate from a JSON escape) is
    absent too: no CBOR encoder can write it, and the Python provider then serves the default.
    """
    if bucketing not in GENERATIONS:
        raise ValueError(f"unknown bucketing {bucketing!r}; expected flagd-v2 or flagd-v3")
    c: Compiled = flag.compiled
    if c.fixed is not None:
        return c.fixed
    if attributes.__class__ is not dict and not isinstance(attributes, Mapping):
        return _INVALID_CONTEXT
    if targeting_key is not None and (not isinstance(targeting_key, str) or not targeting_key):
        targeting_key = None
    try:
        for preds, answer, split in c.rules:
            for pred in preds:
                if not pred(attributes, targeting_key):
                    break
            else:
                if split is None:
                    return answer  # type: ignore[return-value]
                value = targeting_key if split.by is None else _walk(attributes, split.by)
                if value.__class__ is not str or not value:
                    return c.default
                h = split.hashers[bucketing](value)
                return split.answers[bucket_index(h, split.cumulative)]
    except UnicodeEncodeError:
        return c.default
    except Exception:  # a context value Python cannot compare must not crash the caller
        return _GENERAL_ERROR
    return c.default
