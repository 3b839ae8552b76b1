"""The complexity budget: how much work a schema may ask of every validation, decided when the
schema is admitted (``check_schema``) and again before it is applied to data (``validate``).

RE2 keeps each regex linear, but a schema of a kilobyte can still ask for minutes of work per
value: a ``$defs`` chain of ``anyOf`` with three ``$ref`` branches, twelve levels deep, applies
3^12 subschemas to every value it fails on. The limits below are far above what configuration
schemas use and far below what hurts; each is checked in time linear in the schema's size:

* :data:`MAX_SUBSCHEMAS`: subschemas in the document;
* :data:`MAX_EXPANDED`: subschemas applied when every ``$ref`` is expanded in place (recursion is
  counted once per cycle);
* :data:`MAX_FAN_OUT`: subschemas applied to one and the same value, through ``allOf``, ``anyOf``,
  ``oneOf``, ``not``, ``if``/``then``/``else``, dependent schemas and ``$ref``;
* recursion through ``$ref`` may reach the same nested value once per level only: twice would
  double the work with every level of the data;
* ``uniqueItems`` needs ``maxItems`` of at most :data:`MAX_UNIQUE_ITEMS` beside it, as
  Kubernetes asks ``maxItems`` of lists before it estimates the cost of CEL rules.

Every violation's message starts with :data:`TOO_COSTLY` (the condition reason) and names the
limit. A schema over budget is never applied, so no entry using it reaches a workload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import referencing.jsonschema
from referencing.jsonschema import lookup_recursive_ref

from ferry.domain.errors import Violation, field_path
from ferry.domain.jsonschema.dialects import REF_KEYWORDS, REGISTRY, draft_for, meta_id
from ferry.domain.jsonschema.walk import Parts, subschemas

#: The condition and Event reason, and the first word of every budget violation's message.
TOO_COSTLY = "ValidationTooCostly"

MAX_SUBSCHEMAS = 5_000
MAX_EXPANDED = 50_000
MAX_FAN_OUT = 1_000
MAX_UNIQUE_ITEMS = 1_000
#: Work allowed to the recursion analysis itself (path merges); past it the schema is refused.
MAX_ANALYSIS_STEPS = 500_000

_CAP = 10**9  # counts saturate here: "1000000000 or more"
_MAX_RETURN_PATHS = 256  # distinct data paths by which a recursion comes back to its entry

# How a subschema applies relative to its parent: to a nested value (a data step), to the same
# value (None), or not at all unless referenced ($defs, definitions, contentSchema).
Step = tuple[Any, ...]
_DEFINITION = ("def",)
_SAME_VALUE = frozenset(
    {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies"}
    | {"extends"}
)
_ITEM_KEYWORDS = frozenset(
    {"items", "prefixItems", "additionalItems", "unevaluatedItems", "contains"}
)


def is_too_costly(violation: Violation) -> bool:
    """Whether ``violation`` is a budget violation (reason :data:`TOO_COSTLY`)."""
    return violation.message.startswith(f"{TOO_COSTLY}:")


def _step(relative: Parts, node: Mapping[str, Any]) -> Step | None:
    keyword = relative[0]
    if keyword in _SAME_VALUE:
        return None
    if keyword == "properties":
        return ("key", relative[1])
    if keyword in ("patternProperties", "unevaluatedProperties"):
        return ("key*",)
    if keyword == "additionalProperties":
        named = node.get("properties")
        return ("key+", frozenset(named) if isinstance(named, Mapping) else frozenset())
    if keyword in _ITEM_KEYWORDS:
        return ("item",)
    if keyword == "propertyNames":
        return ("name",)
    return _DEFINITION  # $defs, definitions, contentSchema


@dataclass
class _Node:
    value: Any
    parts: Parts
    edges: list[tuple[Step | None, int]] = field(default_factory=list)


def _graph(schema: Any, draft: Any) -> list[_Node]:
    """Every subschema, with edges to its subschemas and to what its ``$ref`` points at.

    Subschemas are found first, so each one is named by its place in the document; a reference
    into a spot that is not a subschema position adds that spot as a node.
    """
    specification = referencing.jsonschema.specification_with(meta_id(draft))
    nodes: list[_Node] = []
    index: dict[int, int] = {}
    resolvers: list[Any] = []
    pending: list[int] = []

    def add(value: Any, parts: Parts, resolver: Any) -> int:
        if id(value) in index:
            return index[id(value)]
        index[id(value)] = len(nodes)
        nodes.append(_Node(value, parts))
        resolvers.append(resolver)
        pending.append(len(nodes) - 1)
        return len(nodes) - 1

    add(schema, (), REGISTRY.resolver_with_root(specification.create_resource(schema)))
    referring: list[int] = []
    while pending or referring:
        while pending:  # the document's subschemas, depth first
            i = pending.pop()
            node = nodes[i]
            referring.append(i)
            if not isinstance(node.value, Mapping):
                continue
            resolver = resolvers[i]
            if node.parts:
                resource = specification.create_resource(node.value)
                if isinstance(resource.id(), str):
                    resolver = resolver.in_subresource(resource)
                    resolvers[i] = resolver
            for relative, sub in subschemas(node.value):
                child = add(sub, (*node.parts, *relative), resolver)
                node.edges.append((_step(relative, node.value), child))
        while referring and not pending:  # then their references
            i = referring.pop()
            node = nodes[i]
            if not isinstance(node.value, Mapping):
                continue
            for keyword in REF_KEYWORDS:
                ref = node.value.get(keyword)
                if not isinstance(ref, str):
                    continue
                try:
                    resolver = resolvers[i]
                    resolved = (
                        lookup_recursive_ref(resolver)
                        if keyword == "$recursiveRef"
                        else resolver.lookup(ref)
                    )
                except Exception:  # unresolvable: check_schema says so; nothing to count
                    continue
                target = add(resolved.contents, (*node.parts, keyword), resolved.resolver)
                node.edges.append((None, target))
    return nodes


def _sizes(nodes: list[_Node], follow: Callable[[Step | None], bool]) -> tuple[list[int], set[int]]:
    """For each node, how many subschemas it applies with every followed edge expanded (a
    reference back into the current expansion counts 1), and the nodes such references reach:
    every cycle goes through one of them."""
    size = [0] * len(nodes)
    state = [0] * len(nodes)  # 0: not seen, 1: being expanded, 2: done
    entries: set[int] = set()
    for start in range(len(nodes)):
        if state[start]:
            continue
        state[start] = 1
        stack = [[start, 0, 1]]  # node, next edge, running total
        while stack:
            frame = stack[-1]
            i, k = frame[0], frame[1]
            edges = nodes[i].edges
            while k < len(edges) and not follow(edges[k][0]):
                k += 1
            if k == len(edges):
                stack.pop()
                state[i], size[i] = 2, min(frame[2], _CAP)
                if stack:
                    stack[-1][2] = min(stack[-1][2] + size[i], _CAP)
                continue
            frame[1] = k + 1
            j = edges[k][1]
            if state[j] == 2:
                frame[2] = min(frame[2] + size[j], _CAP)
            elif state[j] == 1:
                frame[2] += 1
                entries.add(j)
            else:
                state[j] = 1
                stack.append([j, 0, 1])
    return size, entries


def _collide(a: Step, b: Step) -> bool:
    """Whether two data steps can lead to the same nested value."""
    if a == b or {a[0], b[0]} <= {"key*", "key+"}:
        return True
    if a[0] == "key" and b[0] in ("key*", "key+"):
        return b[0] == "key*" or a[1] not in b[1]
    if b[0] == "key" and a[0] in ("key*", "key+"):
        return _collide(b, a)
    return False


def _paths_collide(p: tuple[Step, ...], q: tuple[Step, ...]) -> bool:
    return len(p) == len(q) and all(_collide(a, b) for a, b in zip(p, q, strict=True))


class _TooComplex(Exception):
    pass


def _returns(nodes: list[_Node], entry: int, steps: list[int]) -> dict[tuple[Step, ...], int]:
    """The data paths by which applying ``entry`` comes back to ``entry``, with how often each
    (2 meaning "twice or more"). Other cycles are cut: they are analysed from their own entry."""
    memo: dict[int, dict[tuple[Step, ...], int]] = {}
    on_stack = {entry}
    stack: list[tuple[int, int, dict[tuple[Step, ...], int]]] = [(entry, 0, {})]
    while stack:
        i, k, found = stack.pop()
        edges = nodes[i].edges
        while k < len(edges) and edges[k][0] == _DEFINITION:
            k += 1
        if k == len(edges):
            on_stack.discard(i)
            memo[i] = found
            if not stack:
                return found
            parent, pk, parent_found = stack[-1]
            _merge(parent_found, nodes[parent].edges[pk - 1][0], found, steps)
            continue
        stack.append((i, k + 1, found))
        step, j = edges[k]
        if j == entry:
            _merge(found, step, {(): 1}, steps)
        elif j in memo:
            _merge(found, step, memo[j], steps)
        elif j not in on_stack:
            on_stack.add(j)
            stack.append((j, 0, {}))
    return {}


def _merge(
    into: dict[tuple[Step, ...], int],
    step: Step | None,
    paths: dict[tuple[Step, ...], int],
    steps: list[int],
) -> None:
    for path, count in paths.items():
        steps[0] += 1
        if steps[0] > MAX_ANALYSIS_STEPS:
            raise _TooComplex
        key = path if step is None else (step, *path)
        into[key] = min(into.get(key, 0) + count, 2)
    if len(into) > _MAX_RETURN_PATHS:
        raise _TooComplex


def _spell(path: tuple[Step, ...]) -> str:
    words = {"key*": ".<key>", "key+": ".<other key>", "item": "[*]", "name": ".<property name>"}
    return "value" + "".join(f".{s[1]}" if s[0] == "key" else words[s[0]] for s in path)


def _count(n: int) -> str:
    return f"{n} or more" if n >= _CAP else str(n)


def check_budget(schema: object, path: str = "spec.schema") -> list[Violation]:
    """Every limit of the complexity budget ``schema`` exceeds, sorted; empty when within.

    Pure, never raises, and linear in the size of the schema. A schema whose draft is unknown is
    left to :func:`~ferry.domain.jsonschema.check_schema` (which refuses it) and passes here.
    """
    try:
        return sorted(set(_check_budget(schema, path)))
    except Exception as error:  # fail closed: a schema that cannot be measured is not applied
        return [Violation(path, f"{TOO_COSTLY}: the schema's cost could not be measured: {error}")]


def _check_budget(schema: object, path: str) -> list[Violation]:
    draft = draft_for(schema)
    if draft is None or not isinstance(schema, Mapping):
        return []
    nodes = _graph(schema, draft)
    found: list[Violation] = []

    def at(node: _Node, *more: str | int) -> str:
        return field_path(path, (*node.parts, *more))

    if len(nodes) > MAX_SUBSCHEMAS:
        found.append(
            Violation(
                path,
                f"{TOO_COSTLY}: the schema has {len(nodes)} subschemas; "
                f"the limit is {MAX_SUBSCHEMAS}",
            )
        )
    for node in nodes:
        value = node.value
        if isinstance(value, Mapping) and value.get("uniqueItems") is True:
            most = value.get("maxItems")
            if isinstance(most, bool) or not isinstance(most, int | float):
                most = None
            if most is None or most > MAX_UNIQUE_ITEMS:
                found.append(
                    Violation(
                        at(node, "uniqueItems"),
                        f"{TOO_COSTLY}: uniqueItems needs maxItems of at most "
                        f"{MAX_UNIQUE_ITEMS} in the same subschema",
                    )
                )

    expanded, entries = _sizes(nodes, lambda step: step != _DEFINITION)
    fan_out, _ = _sizes(nodes, lambda step: step is None)
    over = [i for i, n in enumerate(expanded) if n > MAX_EXPANDED]
    if over:  # name the smallest part of the schema that is over the limit on its own
        i = min(over, key=lambda i: (expanded[i], at(nodes[i])))
        found.append(
            Violation(
                at(nodes[i]),
                f"{TOO_COSTLY}: expands to {_count(expanded[i])} subschemas when its $ref are "
                f"followed; the limit is {MAX_EXPANDED}",
            )
        )
    over = [i for i, n in enumerate(fan_out) if n > MAX_FAN_OUT]
    if over:
        i = min(over, key=lambda i: (fan_out[i], at(nodes[i])))
        found.append(
            Violation(
                at(nodes[i]),
                f"{TOO_COSTLY}: applies {_count(fan_out[i])} subschemas to one value through "
                f"allOf/anyOf/oneOf, not, if/then/else and $ref; the limit is {MAX_FAN_OUT}",
            )
        )
    if found:
        return found
    steps = [0]
    for entry in sorted(entries):
        try:
            returns = _returns(nodes, entry, steps)
        except _TooComplex:
            return [
                Violation(
                    at(nodes[entry]),
                    f"{TOO_COSTLY}: the $ref recursion here is too intricate to bound "
                    f"(more than {_MAX_RETURN_PATHS} ways back, or {MAX_ANALYSIS_STEPS} steps "
                    "to analyse)",
                )
            ]
        paths = [p for p in returns if p]  # () is recursion on the same value: refused at use
        for p in paths:
            times = sum(returns[q] for q in paths if _paths_collide(p, q))
            if times > 1:
                found.append(
                    Violation(
                        at(nodes[entry]),
                        f"{TOO_COSTLY}: $ref recursion applies this subschema {times} or more "
                        f"times to the same nested value ({_spell(p)}), so the work multiplies "
                        "with every level of the data; the limit is once per level",
                    )
                )
                break
    return found
