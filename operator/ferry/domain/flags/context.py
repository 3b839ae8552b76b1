"""Evaluation context from text (`--attr name=value`, `?attr=name=value`); the answer as JSON.

The CLI and the HTTP API both take attributes as text and both print the same answer, so the one
spelling of each lives here: they must never disagree about what ``seats=12`` means.

Values are read as JSON when they parse as JSON, otherwise taken as strings: ``seats=12`` is the
number 12 (flag conditions compare strictly, so ``equals 12`` needs a number), ``beta=true`` is a
boolean, ``plan=pro`` is the string "pro", and ``id="12"`` forces the string "12". ``NaN`` and
``Infinity`` are strings (they are not JSON). Dotted names build nested objects
(``user.plan=pro`` → ``{"user": {"plan": "pro"}}``), because a dotted attribute in a rule walks
nested objects, in Ferry's evaluator and in flagd alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .model import Evaluation


class BadAttribute(ValueError):
    """An attribute argument that is not ``name=value`` or clashes with another one."""


def _reject_constant(text: str) -> Any:
    raise ValueError(text)


def parse_value(text: str) -> Any:
    """JSON if ``text`` is JSON (without NaN/Infinity), else the text itself."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def parse_attributes(pairs: Iterable[str]) -> dict[str, Any]:
    """``["plan=pro", "user.age=40"]`` → ``{"plan": "pro", "user": {"age": 40}}``.

    Raises :class:`BadAttribute` for a pair without ``=``, an empty name or name segment, or a
    name that is both a value and an object (``a=1`` and ``a.b=2``): silently keeping one of them
    would evaluate a context the caller did not write.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise BadAttribute(f"attribute {pair!r} is not name=value")
        parts = name.split(".")
        if any(not p for p in parts):
            raise BadAttribute(f"attribute name {name!r} has an empty segment")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise BadAttribute(f"attribute {name!r} clashes with a value given for {part!r}")
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict):
            raise BadAttribute(f"attribute {name!r} clashes with nested attributes under it")
        node[leaf] = parse_value(raw)
    return out


def answer_json(
    namespace: str,
    name: str,
    evaluation: Evaluation,
    revision: int | None = None,
    bucketing: str | None = None,
) -> dict[str, Any]:
    """The answer both front doors print with ``-o json`` / return over HTTP.

    ``bucketing`` names the generation of flagd's ``fractional`` the answer follows, so that a
    team comparing it with their app can tell a bucketing difference from a targeting one.
    """
    out: dict[str, Any] = {
        "namespace": namespace,
        "flag": name,
        "variant": evaluation.variant,
        "value": evaluation.value,
        "reason": str(evaluation.reason),
    }
    if evaluation.error_code is not None:
        out["errorCode"] = str(evaluation.error_code)
    if revision is not None:
        out["revision"] = revision
    if bucketing is not None:
        out["bucketing"] = str(bucketing)
    return out
