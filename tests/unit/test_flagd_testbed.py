"""flagd's own conformance suites (flagd-testbed Gherkin scenarios) against Ferry's evaluator.

The scenarios and their flags are vendored unchanged under tests/data/flagd-testbed (see its
README and VERSION). Each scenario names a flag of the testbed's flags.json; the flag is
translated into the FeatureFlag spec that expresses the same logic (``to_ferry`` below), parsed
with ``parse_flag`` as the webhook would, and evaluated with ``evaluate`` under the bucketing
generation the scenario is for: ``@fractional-v2`` examples under ``flagd-v2``, ``@fractional-v3``
under ``flagd-v3``, untagged ones under both. The answer is then read as an OpenFeature client
reads a provider's (value or the code default, type checked) and compared with the scenario's
expectations.

What Ferry cannot express is listed in ``UNSUPPORTED`` (per flag) and ``UNSUPPORTED_TAGS``, each
with its reason; those scenarios are reported as skipped with it. The list is checked against the
translator, so it cannot go stale: a listed flag must be refused, and every other flag a scenario
uses must translate. An unknown step fails the test rather than passing silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gherkin.parser import Parser
from gherkin.pickles.compiler import Compiler

from ferry.domain.errors import Invalid
from ferry.domain.flags import Bucketing, Evaluation, Reason, evaluate, parse_flag
from ferry.domain.flags.semver import parse_strict

TESTBED = Path(__file__).resolve().parents[1] / "data" / "flagd-testbed"

# Which flags each suite evaluates: the provider suites run against the testbed's merged
# allFlags.json (every flags/*.json), the evaluator suites against testkit-flags.json.
SUITES: dict[str, list[str]] = {
    "gherkin/evaluation.feature": ["flags"],
    "gherkin/targeting.feature": ["flags"],
    "evaluator/gherkin/evaluation.feature": ["evaluator/flags"],
    "evaluator/gherkin/targeting.feature": ["evaluator/flags"],
    "evaluator/gherkin/fractional.feature": ["evaluator/flags"],
}

_NO_DEFAULT = (
    "no defaultVariant: Ferry requires spec.defaultVariant, so every flag has an answer of its "
    "own type when targeting does not decide (the code-default fallback is not expressible)"
)
_REFUSED = (
    "malformed targeting that flagd answers with an error or null at evaluation time; Ferry's "
    "admission refuses it, so such a flag cannot be stored"
)
_BOOLEAN_RESULT = (
    "targeting whose result is a condition's own value (variant named 'true'/'false' or null): "
    "Ferry rules always name the variant they serve"
)
_UNSALTED = (
    "fractional bucketing on a bare attribute ({'var': ...}, any JSON type, no flag-key salt): "
    "Ferry's bucketBy is salted with the flag key and takes strings only, so that two flags "
    "bucketing by one attribute split independently and every provider generation agrees "
    "(docs/feature-flags.md)"
)
_SHARED_SEED = (
    "fractional salted with a constant seed shared by several flags (correlated splits); "
    "Ferry always salts with the flag's own key"
)
_NESTED = (
    "fractional with computed variant names or weights, or used as a condition: Ferry's splits "
    "are literal variants with literal percentages"
)

#: flag key → why Ferry cannot express it.
UNSUPPORTED: dict[str, str] = {
    "null-default-flag": _NO_DEFAULT,
    "undefined-default-flag": _NO_DEFAULT,
    "no-default-flag-null-targeting-variant": _NO_DEFAULT,
    "no-default-flag-undefined-targeting-variant": _NO_DEFAULT,
    "timestamp-flag": (
        "compares $flagd.timestamp: Ferry has no time-based condition yet (attributes starting "
        "with '$' are flagd's; a scheduled change is a GitOps commit)"
    ),
    "ref-to-nonexistent-evaluator-flag": (
        "$ref to an evaluator that does not exist: Ferry has no shared $evaluators, so there is "
        "nothing to reference"
    ),
    "error-targeting-flag": _REFUSED,
    "missing-variant-targeting-flag": _REFUSED,
    "semver-invalid-operator-flag": _REFUSED,
    "semver-wrong-args-flag": _REFUSED,
    "starts-with-wrong-args-flag": _REFUSED,
    "ends-with-wrong-args-flag": _REFUSED,
    "semver-invalid-version-flag": _BOOLEAN_RESULT,
    "starts-with-non-string-flag": _BOOLEAN_RESULT,
    "ends-with-non-string-flag": _BOOLEAN_RESULT,
    "targeting-null-flag": "fractional with a null bucketing expression; " + _UNSALTED,
    "fractional-hash-edge-flag": _UNSALTED,
    "fractional-null-bucket-key-flag": _UNSALTED,
    "fractional-zero-weights-flag": _UNSALTED,
    "fractional-negative-weight-flag": _UNSALTED,
    "fractional-basic-flag": _UNSALTED,
    "fractional-flag-A-shared-seed": _SHARED_SEED,
    "fractional-flag-B-shared-seed": _SHARED_SEED,
    "fractional-nested-if-flag": _NESTED,
    "fractional-nested-var-flag": _NESTED,
    "fractional-nested-weight-flag": _NESTED,
    "fractional-as-condition-flag": _NESTED,
    "fractional-as-condition-false-flag": _NESTED,
}

#: Gherkin tag → why its scenarios do not apply to Ferry.
UNSUPPORTED_TAGS: dict[str, str] = {
    "@fractional-v1": (
        "legacy float bucketing (abs(int32 hash) / MaxInt32 * 100), replaced by flagd-v2's "
        "integer bucketing before any provider generation Ferry matches"
    ),
    "@fractional-nested": _NESTED,
    "@deprecated": "deprecated by the testbed in favour of @no-default-variant",
}


# --- flagd flag definition → FeatureFlag spec -------------------------------------------------


class Unsupported(Exception):
    """The flag uses something a FeatureFlag spec cannot say."""


def _var(node: Any) -> str | None:
    """The attribute of ``{"var": "a"}`` / ``{"var": ["a"]}``, else None."""
    if not (isinstance(node, dict) and set(node) == {"var"}):
        return None
    name = node["var"]
    if isinstance(name, list) and len(name) == 1:
        name = name[0]
    if not isinstance(name, str) or not name:
        raise Unsupported(f"var {node['var']!r}")
    if name.startswith("$flagd."):
        raise Unsupported(f"flagd property {name}")
    return name


def _semver_target(text: Any) -> str | None:
    """flagd pads a partial version and drops a v prefix on both sides; None when flagd cannot
    parse it (the comparison then yields null: the rule never matches)."""
    if not isinstance(text, str):
        return None
    core = text[1:] if text[:1] in ("v", "V") else text
    numeric = re.split(r"[-+]", core, maxsplit=1)[0]
    padded = numeric + ".0" * (2 - numeric.count(".")) + core[len(numeric) :]
    return padded if parse_strict(padded) is not None else None


_SEMVER = {"=": "semverEq", "!=": "semverNe", ">": "semverGt", ">=": "semverGe"}
_SEMVER |= {"<": "semverLt", "<=": "semverLe", "^": "semverMatchMajor", "~": "semverMatchMinor"}


def _conditions(node: Any) -> list[dict[str, Any]] | None:
    """Ferry conditions equivalent to a JSONLogic test (``[]``: always true; None: never)."""
    if node is True:
        return []
    if isinstance(node, dict) and len(node) == 1:
        ((op, args),) = node.items()
        if op == "and" and isinstance(args, list):
            out: list[dict[str, Any]] = []
            for part in args:
                conds = _conditions(part)
                if conds is None:
                    return None
                out += conds
            return out
        if op in ("==", "===") and isinstance(args, list) and len(args) == 2:
            # literal on either side; the scenarios' contexts have the literal's type, where
            # loose == and Ferry's strict equals agree
            for a, b in (args, args[::-1]):
                name = _var(a)
                if name is not None and isinstance(b, str | int | float | bool):
                    return [{"attribute": name, "op": "equals", "value": b}]
        if op in ("starts_with", "ends_with") and isinstance(args, list) and len(args) == 2:
            name = _var(args[0])
            if name is not None:
                if not isinstance(args[1], str):
                    return None  # flagd yields null for a non-string target: never true
                ferry_op = "startsWith" if op == "starts_with" else "endsWith"
                return [{"attribute": name, "op": ferry_op, "value": args[1]}]
        if op == "sem_ver" and isinstance(args, list) and len(args) == 3:
            name = _var(args[0])
            if name is not None and args[1] in _SEMVER:
                target = _semver_target(args[2])
                if target is None:
                    return None
                return [{"attribute": name, "op": _SEMVER[args[1]], "value": target}]
    raise Unsupported(f"condition {json.dumps(node)}")


def _split(args: Any, variants: Mapping[str, Any], default: str) -> dict[str, Any]:
    if not isinstance(args, list) or not args:
        raise Unsupported("fractional without buckets")
    rule: dict[str, Any] = {}
    first = args[0]
    if not isinstance(first, list):
        cat = first.get("cat") if isinstance(first, dict) else None
        if (
            isinstance(cat, list)
            and len(cat) == 2
            and cat[0] == {"var": "$flagd.flagKey"}
            and _var(cat[1]) is not None
        ):
            rule["bucketBy"] = _var(cat[1])
        elif isinstance(cat, list):
            raise Unsupported("fractional salted with something other than $flagd.flagKey")
        else:
            raise Unsupported(f"fractional bucketing on {json.dumps(first)}")
        args = args[1:]
    buckets: list[tuple[str, int]] = []
    for entry in args:
        if not (isinstance(entry, list) and 1 <= len(entry) <= 2 and isinstance(entry[0], str)):
            raise Unsupported(f"fractional bucket {json.dumps(entry)}")
        weight = entry[1] if len(entry) == 2 else 1
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise Unsupported(f"fractional weight {weight!r}")
        buckets.append((entry[0], weight))
    total = sum(w for _, w in buckets)
    if total == 0 or 100 % total:
        raise Unsupported(f"weights summing to {total} are not whole percentages")
    # Ferry splits are in percent; scaling every weight by one factor keeps every bucket
    # (floor(h·k·T / 2³²) crosses k·cᵢ exactly where floor(h·T / 2³²) crosses cᵢ).
    split = [{"variant": v, "weight": w * (100 // total)} for v, w in buckets]
    if len(split) == 1:  # Ferry wants two entries: the default at weight 0 is never chosen
        other = default if default != split[0]["variant"] else next(iter(variants))
        split.append({"variant": other, "weight": 0})
    return {**rule, "split": split}


def _outcome(node: Any, variants: Mapping[str, Any], default: str) -> dict[str, Any] | None:
    """The rule body (variant or split) of an ``if`` branch; None for null (default)."""
    if node is None:
        return None
    if isinstance(node, bool):
        node = "true" if node else "false"  # flagd names the variant by the boolean's text
    if isinstance(node, str):
        return {"variant": node}
    if isinstance(node, dict) and set(node) == {"fractional"}:
        return _split(node["fractional"], variants, default)
    raise Unsupported(f"outcome {json.dumps(node)}")


def _rules(node: Any, variants: Mapping[str, Any], default: str) -> list[dict[str, Any]]:
    if node is None or node == {}:
        return []
    if isinstance(node, dict) and set(node) == {"if"} and isinstance(node["if"], list):
        args = list(node["if"])
        rules: list[dict[str, Any]] = []
        while len(args) >= 2:
            test, then, args = args[0], args[1], args[2:]
            conds = _conditions(test)
            if conds is None:
                continue  # a test flagd can never pass: the branch is unreachable
            body = _outcome(then, variants, default)
            if not conds:  # always true: what follows is unreachable
                return rules + ([{**body}] if body is not None else [])
            if body is None:
                raise Unsupported("a condition that serves the default variant before others")
            rules.append({"when": conds, **body})
        if args:  # the else branch
            rules += (
                _rules(args[0], variants, default)
                if isinstance(args[0], dict)
                else ([_outcome(args[0], variants, default)] if args[0] is not None else [])
            )
        return rules
    if isinstance(node, dict) and set(node) == {"fractional"}:
        return [_split(node["fractional"], variants, default)]
    raise Unsupported(f"targeting {json.dumps(node)[:80]}")


def _inline_refs(node: Any, evaluators: Mapping[str, Any]) -> Any:
    """Replace ``{"$ref": name}`` by the evaluator, as flagd does when it loads the file."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            if node["$ref"] not in evaluators:
                raise Unsupported(f"$ref to unknown evaluator {node['$ref']!r}")
            return _inline_refs(evaluators[node["$ref"]], evaluators)
        return {k: _inline_refs(v, evaluators) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, evaluators) for v in node]
    return node


def to_ferry(definition: Mapping[str, Any], evaluators: Mapping[str, Any]) -> dict[str, Any]:
    """The FeatureFlag spec saying what ``definition`` (one flagd flag) says, or Unsupported.

    ``$evaluators`` are inlined as flagd inlines them when it loads the file: Ferry has no
    shared evaluators, but each flag can say the same thing itself.
    """
    default = definition.get("defaultVariant")
    if not isinstance(default, str):
        raise Unsupported("no defaultVariant")
    variants = definition["variants"]
    targeting = _inline_refs(definition.get("targeting"), evaluators)
    spec: dict[str, Any] = {
        "state": definition.get("state", "ENABLED"),
        "variants": variants,
        "defaultVariant": default,
        "targeting": _rules(targeting, variants, default),
    }
    return spec


# --- the scenarios ----------------------------------------------------------------------------


def _load_flags(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    flags: dict[str, Any] = {}
    evaluators: dict[str, Any] = {}
    for path in sorted((TESTBED / directory).glob("*.json")):
        document = json.loads(path.read_text())
        flags.update(document["flags"])
        evaluators.update(document.get("$evaluators", {}))
    return flags, evaluators


@dataclass
class Case:
    suite: str
    name: str
    line: int
    tags: set[str]
    steps: list[str]
    flag_dir: str
    generation: Bucketing = Bucketing.FLAGD_V3
    flag_key: str = ""
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.suite}:{self.line}:{self.flag_key}:{self.generation.value}"


_FLAG_STEP = re.compile(
    r'an? (\w+)-flag with key "([^"]*)" and a (?:default|fallback) value "(.*)"'
)


def _cases() -> Iterator[Case]:
    for suite, (flag_dir,) in SUITES.items():
        document = Parser().parse((TESTBED / suite).read_text())
        document["uri"] = suite
        for pickle in Compiler().compile(document):
            tags = {t["name"] for t in pickle["tags"]}
            steps = [s["text"] for s in pickle["steps"]]
            keys = [m.group(2) for s in steps if (m := _FLAG_STEP.fullmatch(s))]
            line = pickle["location"]["line"]
            generations = [Bucketing.FLAGD_V2, Bucketing.FLAGD_V3]
            if "@fractional-v2" in tags:
                generations = [Bucketing.FLAGD_V2]
            elif "@fractional-v3" in tags:
                generations = [Bucketing.FLAGD_V3]
            flag_key = keys[0] if keys else ""
            reasons = [UNSUPPORTED_TAGS[t] for t in sorted(tags) if t in UNSUPPORTED_TAGS]
            if flag_key in UNSUPPORTED:
                reasons.append(UNSUPPORTED[flag_key])
            if reasons:  # reported once, not once per generation
                generations = generations[-1:]
            for generation in generations:
                case = Case(suite, pickle["name"], line, tags, steps, flag_dir, generation)
                case.flag_key = flag_key
                case.skip = reasons[0] if reasons else None
                yield case


CASES = list(_cases())


@dataclass
class World:
    """What the steps of one scenario build up, as an OpenFeature client would hold it."""

    flags: dict[str, Any]
    evaluators: dict[str, Any]
    generation: Bucketing
    flag_type: str = ""
    flag_key: str = ""
    code_default: Any = None
    targeting_key: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    value: Any = None
    reason: str = ""
    error_code: str = ""


def _typed(kind: str, text: str) -> Any:
    if kind == "Boolean":
        return text == "true"
    if kind == "Integer":
        return int(text)
    if kind == "Float":
        return float(text)
    if kind == "Object":
        return json.loads(text.replace('\\"', '"'))
    return text  # String


_TYPE_CHECK = {
    "Boolean": lambda v: isinstance(v, bool),
    "String": lambda v: isinstance(v, str),
    "Integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "Float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "Object": lambda v: isinstance(v, dict),
}


def _resolve(world: World) -> None:
    """Evaluate as an OpenFeature client with a flagd provider would report it."""
    spec = to_ferry(world.flags[world.flag_key], world.evaluators)
    flag = parse_flag(world.flag_key, spec)
    result: Evaluation = evaluate(
        flag, world.targeting_key, world.attributes, bucketing=world.generation
    )
    # flagd reports TARGETING_MATCH where Ferry says SPLIT (docs/decisions/0006)
    reason = "TARGETING_MATCH" if result.reason == Reason.SPLIT else str(result.reason)
    if result.variant is None:
        world.value, world.reason, world.error_code = world.code_default, "ERROR", "GENERAL"
    elif not _TYPE_CHECK[world.flag_type](result.value):
        world.value, world.reason, world.error_code = world.code_default, "ERROR", "TYPE_MISMATCH"
    else:
        world.value, world.reason, world.error_code = result.value, reason, ""
    if world.flag_type == "Float" and isinstance(world.value, int):
        world.value = float(world.value)


STEPS: list[tuple[re.Pattern[str], Any]] = []


def step(pattern: str) -> Any:
    def register(fn: Any) -> Any:
        STEPS.append((re.compile(pattern), fn))
        return fn

    return register


@step(r'an option "[^"]*" of type "[^"]*" with value "[^"]*"')
@step(r"a stable flagd provider")
@step(r"an evaluator")
def _setup(world: World) -> None:
    """Provider configuration: Ferry's evaluator has none to set."""


@step(_FLAG_STEP.pattern)
def _given_flag(world: World, kind: str, key: str, default: str) -> None:
    world.flag_type, world.flag_key, world.code_default = kind, key, _typed(kind, default)


@step(r'a context containing a key "([^"]*)", with type "(\w+)" and with value "(.*)"')
def _context_key(world: World, key: str, kind: str, value: str) -> None:
    world.attributes[key] = _typed(kind, value)


@step(r'a context containing a targeting key with value "(.*)"')
def _context_targeting_key(world: World, value: str) -> None:
    world.targeting_key = value


@step(
    r'a context containing a nested property with outer key "([^"]*)" and inner key "([^"]*)", '
    r'with value "(.*)"'
)
def _context_nested(world: World, outer: str, inner: str, value: str) -> None:
    world.attributes.setdefault(outer, {})[inner] = value


@step(r"the flag was evaluated with details")
def _evaluated(world: World) -> None:
    _resolve(world)


@step(r'the resolved details value should be "(.*)"')
def _value_is(world: World, expected: str) -> None:
    assert world.value == _typed(world.flag_type, expected)


@step(r'the reason should be "(.*)"')
def _reason_is(world: World, expected: str) -> None:
    assert world.reason == expected


@step(r'the error-code should be "(.*)"')
def _error_code_is(world: World, expected: str) -> None:
    assert world.error_code == expected


def _run(case: Case) -> None:
    flags, evaluators = _load_flags(case.flag_dir)
    world = World(flags, evaluators, case.generation)
    for text in case.steps:
        for pattern, fn in STEPS:
            match = pattern.fullmatch(text)
            if match:
                fn(world, *match.groups())
                break
        else:
            pytest.fail(f"step the runner does not know: {text!r}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_scenario(case: Case) -> None:
    if case.skip:
        pytest.skip(f"{case.flag_key}: {case.skip}")
    _run(case)


# --- the runner and its lists are themselves checked ----------------------------------------


def test_suites_are_all_there() -> None:
    counts = {suite: sum(c.suite == suite for c in CASES) for suite in SUITES}
    assert all(counts.values()), counts
    run = [c for c in CASES if not c.skip]
    # both generations are exercised, on fractional scenarios too
    for generation in Bucketing:
        assert any(c.generation == generation and "@fractional" in c.tags for c in run)


def test_unsupported_list_matches_the_translator() -> None:
    used = {c.flag_key for c in CASES if c.flag_key}
    for directory in {c.flag_dir for c in CASES}:
        flags, evaluators = _load_flags(directory)
        for key in sorted(used & set(flags)):
            if key in UNSUPPORTED:
                # untranslatable, or translated into a spec Ferry's admission refuses
                with pytest.raises((Unsupported, Invalid)):
                    parse_flag(key, to_ferry(flags[key], evaluators))
            else:
                parse_flag(key, to_ferry(flags[key], evaluators))
    assert set(UNSUPPORTED) <= used, set(UNSUPPORTED) - used
