"""jsonschema validator classes with Ferry's keywords, built with jsonschema's public
extension API (``jsonschema.validators.extend``).

Replaced keywords, and why:

* ``pattern``, ``patternProperties``, and the two keywords that consult ``patternProperties``
  (``additionalProperties``, ``unevaluatedProperties``): RE2 instead of Python's backtracking
  ``re``. Messages are jsonschema's own, word for word.
* ``uniqueItems``: jsonschema compares every pair of items it cannot sort (objects), which is
  quadratic; this one hashes each item once. Same equality (``1 == 1.0``, ``true != 1``), same
  message.

One private attribute remains: ``unevaluatedProperties`` must follow ``$ref`` to find the keys a
referenced schema evaluated, and jsonschema offers keywords no public way to reach the current
reference resolver (``validator._resolver``); its own implementation does the same. jsonschema is
pinned, and tests/unit/test_validation.py covers ``$ref`` and ``$recursiveRef`` under
``unevaluatedProperties``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from jsonschema import ValidationError, validators
from jsonschema.protocols import Validator
from referencing.jsonschema import lookup_recursive_ref

from ferry.domain.jsonschema.regex import compile_re2, regex_problem, search

# Signatures follow jsonschema's keyword protocol: (validator, keyword value, instance, schema).
Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError]]


def _is_valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _extras_msg(extras: Sequence[Any]) -> tuple[str, str]:
    """``('a', 'b'`` , ``were``): how jsonschema lists unexpected keys in its messages."""
    verb = "was" if len(extras) == 1 else "were"
    return ", ".join(repr(extra) for extra in extras), verb


# --- regex keywords ------------------------------------------------------------------------------


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not (validator.is_type(instance, "string") and isinstance(pattern, str)):
        return
    problem = regex_problem(pattern)
    if problem is not None:
        yield ValidationError(problem)
    elif not search(compile_re2(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _matching_keys(patterns: Any, instance: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (pattern, key) for every instance key matched by a ``patternProperties`` pattern."""
    if not isinstance(patterns, Mapping):
        return
    for pattern in patterns:
        if not isinstance(pattern, str) or regex_problem(pattern) is not None:
            continue
        regex = compile_re2(pattern)
        for key in instance:
            if isinstance(key, str) and search(regex, key):
                yield pattern, key


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object") or not isinstance(patterns, Mapping):
        return
    for pattern in patterns:
        if isinstance(pattern, str) and (problem := regex_problem(pattern)) is not None:
            yield ValidationError(problem)
    for pattern, key in _matching_keys(patterns, instance):
        yield from validator.descend(
            instance[key], patterns[pattern], path=key, schema_path=pattern
        )


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """Upstream ``additionalProperties`` with the ``patternProperties`` lookup done by RE2."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    matched = {key for _, key in _matching_keys(patterns, instance)}
    extras = {key for key in instance if key not in properties and key not in matched}
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras, key=str))
            regexes = ", ".join(repr(each) for each in sorted(patterns, key=str))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {regexes}")
        else:
            error = "Additional properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % _extras_msg(sorted(extras, key=str)))


def _evaluated_keys(validator: Any, instance: Any, schema: Any, legacy: bool) -> list[str]:
    """Port of jsonschema's ``find_evaluated_property_keys_by_schema`` using RE2.

    ``legacy`` selects the draft 2019-09 rules (``$recursiveRef``; ``properties`` and friends
    count keys by name) over the 2020-12 rules (``$dynamicRef``; additional/unevaluated keys
    count only when valid).
    """
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []

    def follow(resolved: Any) -> None:
        evolved = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
        keys.extend(_evaluated_keys(evolved, instance, resolved.contents, legacy))

    if (ref := schema.get("$ref")) is not None:
        follow(validator._resolver.lookup(ref))
    if legacy and "$recursiveRef" in schema:
        follow(lookup_recursive_ref(validator._resolver))
    if not legacy and (dynamic := schema.get("$dynamicRef")) is not None:
        follow(validator._resolver.lookup(dynamic))

    if legacy:
        for keyword in ("properties", "additionalProperties", "unevaluatedProperties"):
            value = schema.get(keyword)
            if value is True:
                keys += instance.keys()
            elif isinstance(value, Mapping):
                keys += [name for name in value if name in instance]
    else:
        properties = schema.get("properties")
        if validator.is_type(properties, "object"):
            keys += properties.keys() & instance.keys()
        for keyword in ("additionalProperties", "unevaluatedProperties"):
            if (subschema := schema.get(keyword)) is not None:
                keys += [
                    key
                    for key, value in instance.items()
                    if _is_valid(validator.descend(value, subschema))
                ]

    keys += [key for _, key in _matching_keys(schema.get("patternProperties"), instance)]

    for name, subschema in (schema.get("dependentSchemas") or {}).items():
        if name in instance:
            keys += _evaluated_keys(validator, instance, subschema, legacy)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _is_valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema, legacy)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"], legacy)
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"], legacy)
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"], legacy)
    return keys


def _unevaluated_properties(legacy: bool) -> Keyword:
    def keyword(
        validator: Any, unevaluated: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        evaluated = set(_evaluated_keys(validator, instance, schema, legacy))
        bad = [
            key
            for key in instance
            if key not in evaluated
            and not _is_valid(validator.descend(instance[key], unevaluated, path=key))
        ]
        if not bad:
            return
        if unevaluated is False:
            error = "Unevaluated properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % _extras_msg(sorted(bad, key=str)))
        else:
            error = (
                "Unevaluated properties are not valid under the given schema "
                "(%s %s unevaluated and invalid)"
            )
            yield ValidationError(error % _extras_msg(bad))

    return keyword


# --- uniqueItems ---------------------------------------------------------------------------------


def _identity(value: Any) -> Hashable:
    """A hashable stand-in for a JSON value, equal exactly when JSON Schema calls two values
    equal: numbers by value (``1 == 1.0``), booleans apart from numbers, objects regardless of
    key order. Depth is bounded by the data depth check that runs before validation."""
    if value is True or value is False:
        return ("bool", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, Mapping):
        return ("object", frozenset((key, _identity(item)) for key, item in value.items()))
    if isinstance(value, Sequence):
        return ("array", tuple(_identity(item) for item in value))
    return ("value", value)


def _all_unique(items: Iterable[Any]) -> bool:
    seen: set[Hashable] = set()
    for item in items:
        identity = _identity(item)
        if identity in seen:
            return False
        seen.add(identity)
    return True


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array") and not _all_unique(instance):
        yield ValidationError(f"{instance!r} has non-unique elements")


# --- the classes ---------------------------------------------------------------------------------


_CLASSES: dict[type[Validator], type[Validator]] = {}


def safe_class(base: type[Validator]) -> type[Validator]:
    """``base`` with Ferry's keywords in place of jsonschema's (built once per draft)."""
    if base in _CLASSES:
        return _CLASSES[base]
    replacements: dict[str, Keyword] = {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties(
            legacy=base is validators.Draft201909Validator
        ),
        "uniqueItems": _unique_items,
    }
    present = {name: fn for name, fn in replacements.items() if name in base.VALIDATORS}
    extended: type[Validator] = validators.extend(base, present)  # type: ignore[no-untyped-call]
    _CLASSES[base] = extended
    return extended
