"""What a parsed FeatureFlag is, and what evaluating one answers.

A :class:`Flag` keeps the declarative form (for rendering ``flags.json``) and a compiled form (for
evaluating without re-reading the spec); both are built once by ``parse_flag`` from a spec that
has passed ``check_flag``, so neither the evaluator nor the renderer re-validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """OpenFeature resolution reasons (specification, "Resolution Details").

    A ``StrEnum`` so that a reason compares equal to, and serialises as, the bare string an
    OpenFeature client expects.
    """

    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    """OpenFeature error codes that Ferry's evaluator can produce."""

    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One flag answer. ``value`` is shared between answers: treat it as read-only.

    On ``ERROR`` and ``DISABLED`` ``variant`` and ``value`` are None, so that a caller falls back
    to its own code default as OpenFeature prescribes (and as flagd does for a disabled flag)
    rather than to a value Ferry guessed.
    """

    variant: str | None
    value: Any
    reason: Reason
    error_code: ErrorCode | None = None


class Op(StrEnum):
    """Condition operators of ``spec.targeting[].when[].op``.

    Semantic-version comparisons are separate operators rather than one ``semver`` operator with a
    comparator field, so that every condition has the same ``{attribute, op, value}`` shape and a
    typo in the comparator is a typo in ``op``, caught by the same check.
    """

    EQUALS = "equals"
    NOT_EQUALS = "notEquals"
    IN = "in"
    NOT_IN = "notIn"
    STARTS_WITH = "startsWith"
    ENDS_WITH = "endsWith"
    CONTAINS = "contains"
    SEMVER_EQ = "semverEq"
    SEMVER_NE = "semverNe"
    SEMVER_GT = "semverGt"
    SEMVER_GE = "semverGe"
    SEMVER_LT = "semverLt"
    SEMVER_LE = "semverLe"
    SEMVER_MATCH_MAJOR = "semverMatchMajor"
    SEMVER_MATCH_MINOR = "semverMatchMinor"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


#: Ferry semver operator → flagd ``sem_ver`` comparator.
SEMVER_OPS: dict[Op, str] = {
    Op.SEMVER_EQ: "=",
    Op.SEMVER_NE: "!=",
    Op.SEMVER_GT: ">",
    Op.SEMVER_GE: ">=",
    Op.SEMVER_LT: "<",
    Op.SEMVER_LE: "<=",
    Op.SEMVER_MATCH_MAJOR: "^",
    Op.SEMVER_MATCH_MINOR: "~",
}

#: Ferry numeric operator → JSONLogic operator.
NUMERIC_OPS: dict[Op, str] = {Op.GT: ">", Op.GTE: ">=", Op.LT: "<", Op.LTE: "<="}

#: Operators that take ``values`` (a list); every other one takes ``value``.
LIST_OPS = frozenset({Op.IN, Op.NOT_IN})

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Condition:
    """``attribute op value``; ``value`` is a tuple for ``in``/``notIn``.

    A missing (or null) attribute makes every condition false, negative ones included: "not in
    the EU" should not match a caller that never said where it is.
    """

    attribute: str
    op: Op
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class SplitEntry:
    variant: str
    weight: int


@dataclass(frozen=True, slots=True)
class Rule:
    """All ``when`` conditions hold (AND) → serve ``variant``, or bucket into ``split``.

    ``bucket_by``: for a split, the attribute whose (string) value is bucketed instead of the
    targeting key — "same variant for everyone in an account"; None buckets by targeting key.
    """

    when: tuple[Condition, ...]
    variant: str | None = None
    split: tuple[SplitEntry, ...] | None = None
    bucket_by: str | None = None


@dataclass(frozen=True, slots=True)
class Flag:
    """A validated FeatureFlag. ``key`` is the flag key clients ask for and the bucketing seed.

    ``target`` is kept verbatim for whoever decides which namespaces receive the flag; the flag
    domain does not interpret it.
    """

    key: str
    enabled: bool
    variants: Mapping[str, Any]
    default_variant: str
    rules: tuple[Rule, ...]
    target: Mapping[str, Any] | None = None
    compiled: Any = field(default=None, compare=False, repr=False)
