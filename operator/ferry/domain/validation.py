"""JSON Schema checks for ConfigSchema documents and ConfigEntry data.

Schemas come from users and are run thousands of times inside the operator and the admission
webhook, so validation must be total and bounded:

* It never raises. Every problem, including a schema that cannot be applied, a ``$ref`` that does
  not resolve or data nested 10,000 levels deep, becomes a :class:`Violation`, because an exception
  in a webhook or a handler turns one bad resource into an outage or an endless retry loop.
* It never does I/O. A ``$ref`` is resolved only inside the schema document itself (and the bundled
  JSON Schema meta-schemas); the registry's ``retrieve`` refuses everything else.
* It runs in linear time. ``pattern``, ``patternProperties`` (and the keywords that consult
  ``patternProperties``: ``additionalProperties``, ``unevaluatedProperties``) use RE2 instead of
  Python's backtracking ``re``, where ``^(a+)+$`` against 40 characters never finishes. A pattern
  RE2 cannot express (backreferences, lookaround) is refused by :func:`check_schema`; it is never
  silently handed to ``re``.

``format`` is an annotation, not an assertion (the 2020-12 default), so formats are not checked.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import re2
import referencing.jsonschema
from jsonschema import FormatChecker, ValidationError, validators
from jsonschema._legacy_keywords import lookup_recursive_ref  # pinned jsonschema==4.26.0
from jsonschema._utils import extras_msg, is_valid
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource
from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable

from ferry.domain.errors import Violation, field_path
from ferry.domain.hashing import canonical_json

#: Deepest nesting of objects/arrays accepted in configuration data. Real configuration is rarely
#: deeper than 10; the bound keeps every recursive step (validation, merge, rendering) far from
#: Python's recursion limit.
MAX_DATA_DEPTH = 64

#: Deepest nesting accepted in a schema document. A schema spends two levels per data level
#: (``properties.<name>``), plus combinators, so this is a little over twice the data bound.
MAX_SCHEMA_DEPTH = 160

#: Messages quote the offending value; a huge value must not produce a huge status field.
MAX_MESSAGE_CHARS = 500

_DRAFTS: tuple[type[Validator], ...] = (
    validators.Draft202012Validator,
    validators.Draft201909Validator,
    validators.Draft7Validator,
    validators.Draft6Validator,
    validators.Draft4Validator,
    validators.Draft3Validator,
)
_DEFAULT_DRAFT: type[Validator] = validators.Draft202012Validator


def _meta_id(cls: type[Validator]) -> str:
    return str(cls.ID_OF(cls.META_SCHEMA)).rstrip("#")


_DRAFT_BY_URI: dict[str, type[Validator]] = {_meta_id(cls): cls for cls in _DRAFTS}


# --- regular expressions -----------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a user's bad pattern is a violation, not a line on stderr


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> Any:
    """Compile with RE2 (linear-time matching). Raises ``re2.error`` for unsupported syntax."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _search(regex: Any, text: str) -> bool:
    try:
        return regex.search(text) is not None
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8: match on their raw bytes
        return regex.search(text.encode("utf-8", "surrogatepass")) is not None


def _re2_error_text(error: Exception) -> str:
    detail = error.args[0] if error.args else error
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


@functools.lru_cache(maxsize=4096)
def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used, or ``None`` if RE2 accepts it.

    Python's ``re`` is consulted only to *classify* the failure (compiling is cheap and safe;
    matching is what backtracks), so the user learns whether the pattern is wrong or merely uses
    a feature that would need a backtracking engine.
    """
    try:
        _compile(pattern)
    except re2.error as error:
        reason = _re2_error_text(error)
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError, ValueError):
            return f"invalid regular expression {pattern!r}: {reason}"
        return f"pattern uses a feature Ferry's linear-time regex engine does not support: {reason}"
    except (TypeError, ValueError) as error:  # e.g. NUL handling, odd types
        return f"invalid regular expression {pattern!r}: {error}"
    return None


# --- RE2-backed keywords -------------------------------------------------------------------------
# Signatures follow jsonschema's keyword protocol: (validator, keyword value, instance, schema).

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError]]


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not (validator.is_type(instance, "string") and isinstance(pattern, str)):
        return
    problem = regex_problem(pattern)
    if problem is not None:
        yield ValidationError(problem)
    elif not _search(_compile(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _matching_keys(
    validator: Any, patterns: Any, instance: Mapping[str, Any]
) -> Iterator[tuple[str, str]]:
    """Yield (pattern, key) for every instance key matched by a ``patternProperties`` pattern."""
    if not isinstance(patterns, Mapping):
        return
    for pattern in patterns:
        if not isinstance(pattern, str) or regex_problem(pattern) is not None:
            continue
        regex = _compile(pattern)
        for key in instance:
            if isinstance(key, str) and _search(regex, key):
                yield pattern, key


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object") or not isinstance(patterns, Mapping):
        return
    for pattern in patterns:
        if isinstance(pattern, str) and (problem := regex_problem(pattern)) is not None:
            yield ValidationError(problem)
    for pattern, key in _matching_keys(validator, patterns, instance):
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
    matched = {key for _, key in _matching_keys(validator, patterns, instance)}
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
            yield ValidationError(error % extras_msg(sorted(extras, key=str)))


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
                    if is_valid(validator.descend(value, subschema))
                ]

    keys += [key for _, key in _matching_keys(validator, schema.get("patternProperties"), instance)]

    for name, subschema in (schema.get("dependentSchemas") or {}).items():
        if name in instance:
            keys += _evaluated_keys(validator, instance, subschema, legacy)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if is_valid(validator.descend(instance, subschema)):
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
            and not is_valid(validator.descend(instance[key], unevaluated, path=key))
        ]
        if not bad:
            return
        if unevaluated is False:
            error = "Unevaluated properties are not allowed (%s %s unexpected)"
            yield ValidationError(error % extras_msg(sorted(bad, key=str)))
        else:
            error = (
                "Unevaluated properties are not valid under the given schema "
                "(%s %s unevaluated and invalid)"
            )
            yield ValidationError(error % extras_msg(bad))

    return keyword


@functools.cache
def _safe_class(base: type[Validator]) -> type[Validator]:
    """``base`` with every regex-consulting keyword replaced by an RE2 one."""
    replacements: dict[str, Keyword] = {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties(
            legacy=base is validators.Draft201909Validator
        ),
    }
    present = {name: fn for name, fn in replacements.items() if name in base.VALIDATORS}
    return validators.extend(base, present)


# --- references ----------------------------------------------------------------------------------


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retriever: Ferry never fetches a schema, from anywhere."""
    raise LookupError(f"Ferry does not fetch {uri!r}")


_REGISTRY: Registry[Any] = Registry(retrieve=_refuse)
_CHECK_REGISTRY: Registry[Any] = _REGISTRY.combine(SPECIFICATIONS)

_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


# --- walking a schema ----------------------------------------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE_OR_LIST = ("items", "extends", "additionalItems")
_SCHEMA_SINGLE = (
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
)

Parts = tuple[str | int, ...]


def _subschemas(node: Mapping[str, Any]) -> Iterator[tuple[Parts, Any]]:
    """Direct subschemas of ``node`` with their relative paths, for any draft."""
    for keyword in _SCHEMA_MAPS:
        value = node.get(keyword)
        if isinstance(value, Mapping):
            for name, sub in value.items():
                yield (keyword, name), sub
    for keyword in _SCHEMA_LISTS:
        value = node.get(keyword)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                yield (keyword, i), sub
    for keyword in _SCHEMA_ONE_OR_LIST:
        value = node.get(keyword)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                yield (keyword, i), sub
        elif value is not None:
            yield (keyword,), value
    for keyword in _SCHEMA_SINGLE:
        if keyword in node:
            yield (keyword,), node[keyword]
    dependencies = node.get("dependencies")
    if isinstance(dependencies, Mapping):
        for name, sub in dependencies.items():
            if isinstance(sub, Mapping):
                yield ("dependencies", name), sub


def _too_deep(value: Any, limit: int) -> Parts | None:
    """Path of the first container nested deeper than ``limit``, found without recursion."""
    stack: list[tuple[Any, Parts]] = [(value, ())]
    while stack:
        node, parts = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.items()
        elif isinstance(node, list | tuple):
            children = enumerate(node)
        else:
            continue
        if len(parts) >= limit:
            return parts
        stack.extend((child, (*parts, key)) for key, child in children)
    return None


def _nested_dialect(schema: Any) -> Parts | None:
    """Path of a ``$schema`` below the root, if any.

    jsonschema switches to its stock (``re``-based) validator class when it meets a subschema
    declaring ``$schema``, which would bypass the RE2 keywords, so one dialect per document it is.
    Every object is searched, not just subschema positions, because a ``$ref`` may point anywhere.
    """
    stack: list[tuple[Any, Parts]] = [(schema, ())]
    while stack:
        node, parts = stack.pop()
        if isinstance(node, Mapping):
            if parts and "$schema" in node:
                return (*parts, "$schema")
            stack.extend((child, (*parts, key)) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, (*parts, i)) for i, child in enumerate(node))
    return None


def _draft_for(schema: Any) -> type[Validator] | None:
    if not isinstance(schema, Mapping) or "$schema" not in schema:
        return _DEFAULT_DRAFT
    uri = schema["$schema"]
    return _DRAFT_BY_URI.get(uri.rstrip("#")) if isinstance(uri, str) else None


def _unknown_dialect(schema: Mapping[str, Any], path: str) -> Violation:
    supported = ", ".join(sorted(_DRAFT_BY_URI))
    return Violation(
        field_path(path, ["$schema"]),
        f"unknown $schema {schema['$schema']!r} (supported: {supported})",
    )


def _reference_problem(resolver: Any, keyword: str, ref: str) -> str | None:
    try:
        resolver.lookup(ref)
    except (PointerToNowhere, NoSuchAnchor):
        return f"{keyword} {ref!r} does not resolve within the schema"
    except (Unresolvable, LookupError, ValueError, TypeError):
        if ref.startswith("#"):
            return f"{keyword} {ref!r} does not resolve within the schema"
        return f'remote {keyword} "{ref}" is not allowed (Ferry never fetches schemas)'
    return None


def _walk_problems(schema: Any, draft: type[Validator], path: str) -> list[Violation]:
    """References and regexes, checked per subschema with the resolver of its enclosing resource."""
    specification = referencing.jsonschema.specification_with(_meta_id(draft))
    root_resolver = _CHECK_REGISTRY.resolver_with_root(specification.create_resource(schema))
    found: list[Violation] = []
    stack: list[tuple[Any, Parts, Any]] = [(schema, (), root_resolver)]
    while stack:
        node, parts, resolver = stack.pop()
        if not isinstance(node, Mapping):
            continue
        if parts:
            resource = specification.create_resource(node)
            if isinstance(resource.id(), str):
                resolver = resolver.in_subresource(resource)
        for keyword in _REF_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str) and (problem := _reference_problem(resolver, keyword, ref)):
                found.append(Violation(field_path(path, [*parts, keyword]), problem))
        pattern = node.get("pattern")
        if isinstance(pattern, str) and (problem := regex_problem(pattern)):
            found.append(Violation(field_path(path, [*parts, "pattern"]), problem))
        patterns = node.get("patternProperties")
        if isinstance(patterns, Mapping):
            for key in patterns:
                if isinstance(key, str) and (problem := regex_problem(key)):
                    where = field_path(path, [*parts, "patternProperties", key])
                    found.append(Violation(where, problem))
        for relative, sub in _subschemas(node):
            stack.append((sub, (*parts, *relative), resolver))
    return found


def _truncate(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"


def _format_checker_without_regex(draft: type[Validator]) -> FormatChecker:
    """The draft's meta-schema format checks, minus ``regex`` (done with RE2 by the walk)."""
    checker = FormatChecker(formats=())
    base = draft.FORMAT_CHECKER
    checker.checkers = {k: v for k, v in base.checkers.items() if k != "regex"}
    return checker


def check_schema(schema: object, path: str = "spec.schema") -> list[Violation]:
    """Every reason ``schema`` cannot be used as a ConfigSchema, sorted; empty when usable.

    Checks, in one pass so a user sees everything at once: the document is valid for its draft
    (``$schema``, default 2020-12); every ``$ref`` resolves inside the document; every regex is
    one RE2 runs. Never raises.
    """
    try:
        return sorted(set(_check_schema(schema, path)))
    except Exception as error:
        return [Violation(path, _truncate(f"schema could not be checked: {error}"))]


def _check_schema(schema: object, path: str) -> list[Violation]:
    if (deep := _too_deep(schema, MAX_SCHEMA_DEPTH)) is not None:
        message = f"schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
        return [Violation(field_path(path, deep), message)]
    try:
        canonical_json(schema)
    except (TypeError, ValueError) as error:
        return [Violation(path, _truncate(f"schema is not JSON: {error}"))]
    draft = _draft_for(schema)
    if draft is None:
        assert isinstance(schema, Mapping)
        return [_unknown_dialect(schema, path)]
    violations: list[Violation] = []
    if (nested := _nested_dialect(schema)) is not None:
        message = "$schema is only allowed at the root of the schema"
        violations.append(Violation(field_path(path, nested), message))
    meta = _safe_class(draft)(
        draft.META_SCHEMA,
        format_checker=_format_checker_without_regex(draft),
    )
    for error in meta.iter_errors(schema):
        where = field_path(path, error.absolute_path)
        violations.append(Violation(where, _truncate(error.message)))
    if not violations and isinstance(schema, Mapping):
        violations.extend(_walk_problems(schema, draft, path))
    return violations


# --- validating data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    validator: Any = None
    problem: str | None = None


@functools.lru_cache(maxsize=512)
def _compiled(canonical: str) -> _Compiled:
    """A ready validator per distinct schema text; the same schema is applied thousands of times.

    Keyed by canonical JSON, so key order or whitespace differences share one entry, and built
    from a private parse of that text, so no caller can mutate a cached schema.
    """
    schema = json.loads(canonical)
    draft = _draft_for(schema)
    if draft is None:
        return _Compiled(problem=f"unknown $schema {schema['$schema']!r}")
    if (nested := _nested_dialect(schema)) is not None:
        where = field_path("", nested)
        return _Compiled(problem=f"$schema is only allowed at the root of the schema ({where})")
    return _Compiled(validator=_safe_class(draft)(schema, registry=_REGISTRY))


def check_depth(instance: object, path: str = "spec.data") -> list[Violation]:
    """A violation if ``instance`` nests deeper than ``MAX_DATA_DEPTH``: bounds the work every
    later step (merge, hash, render, validate) does on hostile input, with or without a schema."""
    if (deep := _too_deep(instance, MAX_DATA_DEPTH)) is not None:
        message = f"data is nested deeper than {MAX_DATA_DEPTH} levels"
        return [Violation(field_path(path, deep), message)]
    return []


def validate(instance: object, schema: object, path: str = "spec.data") -> list[Violation]:
    """Every way ``instance`` fails ``schema``, each at the full path of the offending value.

    Sorted and deduplicated, so status and webhook messages are stable between reconciles. Never
    raises: a schema that cannot be applied (unresolvable ``$ref``, unsupported regex, infinite
    ``$ref`` recursion) yields a violation at ``path`` explaining why, after any violations found
    before the failure.
    """
    if deep := check_depth(instance, path):
        return deep
    if _too_deep(schema, MAX_SCHEMA_DEPTH) is not None:
        return [
            Violation(path, f"cannot validate: schema is nested too deeply ({MAX_SCHEMA_DEPTH})")
        ]
    try:
        compiled = _compiled(canonical_json(schema))
    except Exception as error:
        return [Violation(path, _truncate(f"cannot validate: schema is unusable: {error}"))]
    if compiled.problem is not None:
        return [Violation(path, _truncate(f"cannot validate: {compiled.problem}"))]

    violations: set[Violation] = set()
    try:
        for error in compiled.validator.iter_errors(instance):
            where = field_path(path, error.absolute_path)
            violations.add(Violation(where, _truncate(error.message)))
    except RecursionError:
        violations.add(Violation(path, "cannot validate: the schema's $ref recursion never ends"))
    except Unresolvable as error:
        ref = getattr(error, "ref", "?")
        message = f'cannot validate: $ref "{ref}" does not resolve within the schema'
        violations.add(Violation(path, _truncate(f"{message} (Ferry never fetches schemas)")))
    except Exception as error:
        violations.add(Violation(path, _truncate(f"cannot validate: {error}")))
    return sorted(violations)
