"""Layering of ConfigEntries: ``spec.inherits`` deep-merged in order, the entry's own data last.

Inheritance lets a team keep shared defaults in one entry and override a few keys per service.
The rules are deliberately the simplest that are predictable from the YAML alone: objects merge
key by key, everything else (lists, scalars, null) is replaced wholesale, and later wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry.domain.errors import Invalid, Violation

#: How many levels of ``inherits`` are followed before giving up. Real hierarchies are 2-4 deep;
#: the bound turns a pathological chain into a clear error instead of unbounded work.
MAX_INHERITANCE_DEPTH = 32

_ARROW = " → "


def _copy_json(value: Any) -> Any:
    """Copy a JSON value without recursion, so hostile nesting cannot raise RecursionError.

    Results must never alias the caller's objects: a resolved config is cached and rendered, and
    a later edit to one must not silently change the other.
    """
    if not isinstance(value, Mapping | list):
        return value
    root: Any = {} if isinstance(value, Mapping) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, Mapping) else enumerate(src)
        for key, item in items:
            if isinstance(item, Mapping | list):
                child: Any = {} if isinstance(item, Mapping) else []
                stack.append((item, child))
            else:
                child = item
            if isinstance(dst, dict):
                dst[key] = child
            else:
                dst.append(child)
    return root


def deep_merge(base: Any, overlay: Any) -> Any:
    """Merge ``overlay`` onto ``base``: objects key by key, anything else replaced by ``overlay``.

    Lists are replaced, not concatenated, because there is no way to remove an inherited list item
    otherwise. Neither input is mutated and the result shares no containers with them.
    Iterative, so depth is bounded only by memory.
    """
    if not (isinstance(base, Mapping) and isinstance(overlay, Mapping)):
        return _copy_json(overlay)
    result = _copy_json(base)
    stack: list[tuple[dict[str, Any], Mapping[str, Any]]] = [(result, overlay)]
    while stack:
        target, layer = stack.pop()
        for key, value in layer.items():
            current = target.get(key)
            if isinstance(value, Mapping) and isinstance(current, dict):
                stack.append((current, value))
            else:
                target[key] = _copy_json(value)
    return result


@dataclass(frozen=True)
class Resolved:
    """An entry's effective data and every entry it was built from.

    ``bases`` (sorted, excluding the entry itself) is what the operator watches: a change to any of
    them must re-resolve this entry.
    """

    data: dict[str, Any]
    bases: tuple[str, ...] = field(default=())


def _chain(names: list[str]) -> str:
    return _ARROW.join(names)


def _base_names(name: str, spec: Mapping[str, Any]) -> list[str]:
    """Read ``spec.inherits`` strictly: a malformed item is an error, never silently skipped."""
    inherits = spec.get("inherits") or []
    if not isinstance(inherits, list):
        raise Invalid("InvalidSpec", [Violation("spec.inherits", f"in {name!r}: must be a list")])
    names: list[str] = []
    for i, item in enumerate(inherits):
        base = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(base, str) or not base:
            raise Invalid(
                "InvalidSpec",
                [Violation(f"spec.inherits[{i}].name", f"in {name!r}: must be a non-empty string")],
            )
        names.append(base)
    return names


def _own_data(name: str, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    data = spec.get("data")
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise Invalid("InvalidSpec", [Violation("spec.data", f"in {name!r}: must be an object")])
    return data


def resolve(name: str, entries: Mapping[str, Mapping[str, Any]]) -> Resolved:
    """Resolve entry ``name`` against the ``spec`` of every entry in its namespace.

    Each base is resolved fully (including its own bases), then the bases are merged in the order
    listed and the entry's own ``data`` is merged last. Errors name the index in *this* entry's
    ``spec.inherits`` that leads to the problem, since that is the field the user reading this
    entry's status can change, and the message carries the whole chain for the rest.
    Bases shared by several branches (diamonds) are resolved once per call.
    """
    if name not in entries:
        raise Invalid(
            "MissingBase", [Violation("metadata.name", f'ConfigEntry "{name}" not found')]
        )
    memo: dict[str, tuple[dict[str, Any], frozenset[str]]] = {}

    def visit(current: str, chain: list[str], top_index: int | None) -> tuple[Any, frozenset[str]]:
        if current in memo:
            return memo[current]
        spec = entries[current]
        own = _own_data(current, spec)
        merged: Any = {}
        used: set[str] = set()
        for i, base in enumerate(_base_names(current, spec)):
            index = i if top_index is None else top_index
            path = f"spec.inherits[{index}].name"
            sub_chain = [*chain, base]
            if base in chain:
                message = f"inheritance cycle: {_chain(sub_chain)}"
                raise Invalid("InheritanceCycle", [Violation("spec.inherits", message)])
            if base not in entries:
                message = f'ConfigEntry "{base}" not found (chain: {_chain(sub_chain)})'
                raise Invalid("MissingBase", [Violation(path, message)])
            if len(sub_chain) > MAX_INHERITANCE_DEPTH:
                message = (
                    f"inheritance is deeper than {MAX_INHERITANCE_DEPTH} levels"
                    f" (chain: {_chain(sub_chain)})"
                )
                raise Invalid("InheritanceTooDeep", [Violation(path, message)])
            base_data, base_used = visit(base, sub_chain, index)
            merged = deep_merge(merged, base_data)
            used |= base_used | {base}
        result = (deep_merge(merged, own), frozenset(used))
        memo[current] = result
        return result

    data, used = visit(name, [name], None)
    return Resolved(data=data, bases=tuple(sorted(used - {name})))
