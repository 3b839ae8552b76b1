"""Validation one top-level property at a time, each property's result remembered.

Entries are edited a value at a time, and each edit is validated twice (the admission webhook,
then the reconciler), against a schema that is almost always an object schema: ``type``,
``required``, ``additionalProperties`` and one subschema per property. The errors of such a
schema over a document are exactly

* the errors of the schema with every ``properties`` subschema replaced by ``true`` (the *root*:
  type, required and unexpected keys, ``patternProperties``, ...), plus
* for each property the document has and ``properties`` names, the errors of that subschema over
  that value, found by applying that subschema alone (with the ``$defs`` it may refer to).

The second part depends on nothing but the schema, the property's name and its value, so a
value found valid is remembered (:data:`MAX_REMEMBERED` of them, least recently used dropped
first): an edit of one value of a 50-property entry validates that value and the root, not the
49 others (decision 0027). Only valid values are remembered: they are what the next apply of the
same entry sends again, and an empty answer keeps the memory bounded by the keys alone.

The split is used only where it is exact (:func:`splittable`): root keywords that never look at
how a property's subschema fared (no ``allOf``/``anyOf``/``$ref``/``unevaluatedProperties``/...
at the root), and no reference or anchor that could reach into a property's subschema from
elsewhere (every ``$ref`` points into ``$defs``/``definitions``, which both halves keep; no
embedded ``$id``, no anchors, no dynamic references). Draft 3 is never split: its ``properties``
keyword reads ``required`` from inside the subschemas. Whatever fails on this path is answered
by the whole validation instead (``data.validate``), so messages never depend on the path taken.
A property-by-property test compares both paths on generated schemas and data.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import threading
from collections.abc import Mapping
from typing import Any

from jsonschema import validators

from ferry.domain.hashing import canonical_json
from ferry.domain.jsonschema.walk import Parts

#: Valid property values remembered at most, across schemas (each a key of at most
#: :data:`MAX_KEY_CHARS` characters or a 32-byte digest: at most about 4 MiB per process).
MAX_REMEMBERED = 8_192
#: Strings up to this length are remembered by value; longer values by their SHA-256. Looking
#: a string up by value costs a hash of it that Python keeps on the string; its SHA-256 costs
#: an encoding and a digest each time: 0.7 µs for a 250-character value, 30 µs of a check of
#: the benchmark's 50-property entry (decision 0033).
MAX_KEY_CHARS = 256

#: Root keywords that judge the document without looking at its properties' subschemas.
ROOT_KEYWORDS = frozenset(
    {"$schema", "$id", "id", "$comment", "$defs", "definitions"}
    | {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
    | {"type", "properties", "required", "additionalProperties", "patternProperties"}
    | {"minProperties", "maxProperties", "propertyNames", "dependentRequired", "enum", "const"}
)
#: What a property's own schema keeps of the root: the dialect, the base URI, the definitions.
CONTEXT_KEYWORDS = ("$schema", "$id", "id", "$defs", "definitions")
#: References that stay inside the parts both halves keep intact.
_LOCAL_REF_PREFIXES = ("#/$defs/", "#/definitions/")
#: Keywords that let one part of a document reach another in ways a split cannot follow.
_ANCHORS_AND_REFS = frozenset(
    {"$anchor", "$dynamicAnchor", "$recursiveAnchor", "$dynamicRef", "$recursiveRef"}
)

#: A *flat* schema (:func:`flat`) is a tree of these keywords. None applies a subschema to
#: more than one value, or more than one subschema to a value (no combinators, references,
#: ``items`` or ``patternProperties``; ``additionalProperties`` only true or false), so each
#: subschema is applied at most once per document, and each keyword costs at most a pass over
#: its own value (a string's length, an object's keys).
FLAT_KEYWORDS = frozenset(
    {"$schema", "$id", "id", "$comment", "$defs", "definitions"}
    | {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
    | {"format", "type", "const", "enum", "minimum", "maximum", "multipleOf"}
    | {"exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern"}
    | {"minItems", "maxItems", "minProperties", "maxProperties", "required"}
    | {"properties", "additionalProperties"}
)
#: Subschemas in a flat schema at most (all of them may be applied to one document), and names
#: in each ``required`` ...
MAX_FLAT_SUBSCHEMAS = 256
#: ... and values in each ``enum`` (each compared with the value in turn). ``const`` and ``enum``
#: values must be scalars: comparing a value with a scalar takes no walk through it.
MAX_FLAT_LIST = 16
#: Characters in a flat schema's ``pattern``. RE2 matches in time linear in the text, but when
#: a pattern's automaton outgrows RE2's memory budget the factor is the pattern's size.
MAX_FLAT_PATTERN = 512

_SCALARS = frozenset({int, float, bool, type(None)})
_LIST_ITEMS = _SCALARS | {str}
_tokens = itertools.count()


def splittable(schema: Any, draft: type[Any]) -> bool:
    """Whether validating ``schema`` property by property gives exactly its errors."""
    if draft is validators.Draft3Validator or not isinstance(schema, Mapping):
        return False
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return False
    if not set(schema) <= ROOT_KEYWORDS:
        return False
    if not all(isinstance(sub, Mapping | bool) for sub in properties.values()):
        return False
    return _references_stay_local(schema)


def flat(schema: Any, draft: type[Any]) -> bool:
    """Whether validating any document against ``schema`` costs at most one pass over the
    schema and one over the document: :func:`splittable`, and a tree of at most
    :data:`MAX_FLAT_SUBSCHEMAS` subschemas of :data:`FLAT_KEYWORDS` with short scalar lists.
    Most configuration schemas are; ``ferry.domain.admission.cheap_to_check`` uses it to decide
    where a check may run."""
    if not splittable(schema, draft):
        return False
    pending, count = [schema], 0
    while pending:
        node = pending.pop()
        count += 1
        if count > MAX_FLAT_SUBSCHEMAS:
            return False
        if isinstance(node, bool):
            continue
        if not isinstance(node, Mapping) or not set(node) <= FLAT_KEYWORDS:
            return False
        if node is not schema and not set(node).isdisjoint(CONTEXT_KEYWORDS):
            return False  # definitions are only for references, which a flat schema has none of
        if not isinstance(node.get("additionalProperties", True), bool):
            return False
        if "const" in node and type(node["const"]) not in _LIST_ITEMS:
            return False
        if len(str(node.get("pattern", ""))) > MAX_FLAT_PATTERN:
            return False
        for keyword, most in (
            ("enum", MAX_FLAT_LIST),
            ("type", 8),
            ("required", MAX_FLAT_SUBSCHEMAS),
        ):
            value = node.get(keyword, ())
            if isinstance(value, list) and (
                len(value) > most or any(type(v) not in _LIST_ITEMS for v in value)
            ):
                return False
        properties = node.get("properties", {})
        if not isinstance(properties, Mapping):
            return False
        pending.extend(properties.values())
    return True


def _references_stay_local(schema: Mapping[str, Any]) -> bool:
    """No ``$ref`` outside ``$defs``/``definitions``, no anchors or dynamic references, and no
    ``$id`` below the root, anywhere in the document (data in ``enum`` or ``default`` that looks
    like one counts too: a missed speed-up, never a wrong answer)."""
    stack: list[tuple[Any, bool]] = [(schema, True)]
    while stack:
        node, root = stack.pop()
        if isinstance(node, Mapping):
            if not _ANCHORS_AND_REFS.isdisjoint(node):
                return False
            ref = node.get("$ref")
            if ref is not None and not (
                isinstance(ref, str) and ref.startswith(_LOCAL_REF_PREFIXES)
            ):
                return False
            if not root and any(isinstance(node.get(key), str) for key in ("$id", "id")):
                return False
            stack.extend((child, False) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, False) for child in node)
    return True


Problem = tuple[Parts, str]  # (absolute path in the document, message)


class Split:
    """One schema's two halves (see the module): built once per distinct schema, with the
    validator class and registry the whole validation uses."""

    def __init__(self, schema: Mapping[str, Any], cls: type[Any], registry: Any) -> None:
        self._properties: Mapping[str, Any] = schema["properties"]
        # What a property's subschema is applied from (``evolve``: the same class, and a
        # resolver rooted where the definitions it may refer to are).
        context = {key: schema[key] for key in CONTEXT_KEYWORDS if key in schema}
        self._context = cls(context, registry=registry)
        root = {**schema, "properties": dict.fromkeys(self._properties, True)}
        self._root = _root_class(cls)(root, registry=registry)
        self._one: dict[str, Any] = {}
        self._token = next(_tokens)

    def problems(self, instance: Any) -> list[Problem]:
        """Every error of the whole schema over ``instance``; raises what the validators raise."""
        found = [(tuple(e.absolute_path), e.message) for e in self._root.iter_errors(instance)]
        if self._root.is_type(instance, "object"):
            for name, value in instance.items():
                if name in self._properties:
                    found += self._property(name, value)
        return found

    def _property(self, name: str, value: Any) -> tuple[Problem, ...]:
        key = (self._token, name, _value_key(value))
        known = REMEMBERED.get(key)
        if known is not None:
            return known
        validator = self._one.get(name)
        if validator is None:  # the subschema itself, as the ``properties`` keyword applies it
            validator = self._one[name] = self._context.evolve(schema=self._properties[name])
        # Where the whole schema's ``properties`` would report each error: below the property,
        # except for a ``false`` subschema, whose error jsonschema reports at the object.
        where = () if self._properties[name] is False else (name,)
        found = tuple(((*where, *e.absolute_path), e.message) for e in validator.iter_errors(value))
        if not found:
            REMEMBERED.put(key, found)
        return found


_ROOT_CLASSES: dict[type[Any], type[Any]] = {}


def _root_class(cls: type[Any]) -> type[Any]:
    """``cls`` for the root half: its ``properties`` keyword checks nothing, each property being
    checked by a schema of its own (:meth:`Split._property`). The keyword's subschemas are all
    ``true`` there anyway, but jsonschema would still descend into each one present (a third of
    an ordinary entry's validation); ``additionalProperties`` still reads the names."""
    if cls not in _ROOT_CLASSES:
        root: type[Any] = validators.extend(cls, {"properties": _checked_alone})  # type: ignore[no-untyped-call]
        _ROOT_CLASSES[cls] = root
    return _ROOT_CLASSES[cls]


def _checked_alone(validator: Any, properties: Any, instance: Any, schema: Any) -> None:
    """The root's ``properties`` keyword (:func:`_root_class`): no errors of its own."""


def _value_key(value: Any) -> tuple[type, Any]:
    """``value`` as a dictionary key: itself if small and hashable, else the SHA-256 of its text
    (of its canonical JSON for arrays and objects, so key order does not matter). The type keeps
    ``1``, ``1.0`` and ``true`` apart, and a string from the JSON that spells it."""
    kind = type(value)
    if kind in _SCALARS or (kind is str and len(value) <= MAX_KEY_CHARS):
        return kind, value
    text = value if kind is str else canonical_json(value)
    return kind, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class _Remembered:
    """A bounded least-recently-used map, safe to share between threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.OrderedDict[Any, tuple[Problem, ...]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> tuple[Problem, ...] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Any, problems: tuple[Problem, ...]) -> None:
        with self._lock:
            self._items[key] = problems
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


REMEMBERED = _Remembered(MAX_REMEMBERED)
