"""``check_schema``: whether a document can be used as a ConfigSchema, with every reason why not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import referencing.jsonschema
from jsonschema import FormatChecker
from jsonschema.protocols import Validator
from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable

from ferry.domain.errors import Violation, field_path
from ferry.domain.hashing import canonical_json
from ferry.domain.jsonschema.budget import check_budget
from ferry.domain.jsonschema.dialects import (
    CHECK_REGISTRY,
    DRAFT_BY_URI,
    REF_KEYWORDS,
    draft_for,
    meta_id,
)
from ferry.domain.jsonschema.keywords import safe_class
from ferry.domain.jsonschema.regex import regex_problem
from ferry.domain.jsonschema.walk import Parts, nested_dialect, subschemas, too_deep

#: Deepest nesting accepted in a schema document. A schema spends two levels per data level
#: (``properties.<name>``), plus combinators, so this is a little over twice the data bound.
MAX_SCHEMA_DEPTH = 160

#: Messages quote the offending value; a huge value must not produce a huge status field.
MAX_MESSAGE_CHARS = 500


def truncate(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"


def unknown_dialect(schema: Mapping[str, Any], path: str) -> Violation:
    supported = ", ".join(sorted(DRAFT_BY_URI))
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
    specification = referencing.jsonschema.specification_with(meta_id(draft))
    root_resolver = CHECK_REGISTRY.resolver_with_root(specification.create_resource(schema))
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
        for keyword in REF_KEYWORDS:
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
        for relative, sub in subschemas(node):
            stack.append((sub, (*parts, *relative), resolver))
    return found


def _format_checker_without_regex(draft: type[Validator]) -> FormatChecker:
    """The draft's meta-schema format checks, minus ``regex`` (done with RE2 by the walk)."""
    checker = FormatChecker(formats=())
    for name, (check, raises) in draft.FORMAT_CHECKER.checkers.items():
        if name != "regex":
            checker.checks(name, raises)(check)
    return checker


def check_schema(schema: object, path: str = "spec.schema") -> list[Violation]:
    """Every reason ``schema`` cannot be used as a ConfigSchema, sorted; empty when usable.

    Checks, in one pass so a user sees everything at once: the document is valid for its draft
    (``$schema``, default 2020-12); every ``$ref`` resolves inside the document; every regex is
    one RE2 runs; the schema is within the complexity budget (:func:`check_budget`). Never raises.
    """
    try:
        return sorted(set(_check_schema(schema, path)))
    except Exception as error:
        return [Violation(path, truncate(f"schema could not be checked: {error}"))]


def _check_schema(schema: object, path: str) -> list[Violation]:
    if (deep := too_deep(schema, MAX_SCHEMA_DEPTH)) is not None:
        message = f"schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
        return [Violation(field_path(path, deep), message)]
    try:
        canonical_json(schema)
    except (TypeError, ValueError) as error:
        return [Violation(path, truncate(f"schema is not JSON: {error}"))]
    draft = draft_for(schema)
    if draft is None:
        assert isinstance(schema, Mapping)
        return [unknown_dialect(schema, path)]
    violations: list[Violation] = []
    if (nested := nested_dialect(schema)) is not None:
        message = "$schema is only allowed at the root of the schema"
        violations.append(Violation(field_path(path, nested), message))
    meta = safe_class(draft)(
        draft.META_SCHEMA,
        format_checker=_format_checker_without_regex(draft),
    )
    for problem in meta.iter_errors(schema):  # type: ignore[arg-type]
        where = field_path(path, problem.absolute_path)
        violations.append(Violation(where, truncate(problem.message)))
    if not violations and isinstance(schema, Mapping):
        violations.extend(_walk_problems(schema, draft, path))
        violations.extend(check_budget(schema, path))
    return violations
