"""Walking schema documents and data without recursion (hostile input may nest 10,000 deep)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: A location inside a document: keys and array indices from its root.
Parts = tuple[str | int, ...]
#: What JSON decodes to besides objects and arrays: never anything below them (a tuple for
#: ``isinstance``, which answers for these concrete types faster than for the ``Mapping`` ABC).
LEAVES = (str, int, float, type(None))

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


def subschemas(node: Mapping[str, Any]) -> Iterator[tuple[Parts, Any]]:
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


def too_deep(value: Any, limit: int) -> Parts | None:
    """Path of the first container nested deeper than ``limit``, found without recursion.

    Level by level, so the usual answer (None) visits each value once without building a path
    for it; only when a container sits at depth ``limit`` is the walk repeated to name it
    (every check of an entry, inline or in a worker, asks this once or twice of its data)."""
    level = [value]
    for _ in range(limit):
        below: list[Any] = []
        for node in level:
            if isinstance(node, LEAVES):
                continue
            if isinstance(node, Mapping):
                below.extend(node.values())
            elif isinstance(node, list | tuple):
                below.extend(node)
        if not below:
            return None
        level = below
    if not any(isinstance(node, Mapping | list | tuple) for node in level):
        return None
    return _first_too_deep(value, limit)


def _first_too_deep(value: Any, limit: int) -> Parts | None:
    """:func:`too_deep`'s answer when there is one: depth first, each node with its path."""
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


def nested_dialect(schema: Any) -> Parts | None:
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
