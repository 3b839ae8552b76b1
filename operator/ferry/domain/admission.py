"""What the admission webhooks decide: pure functions over specs, no I/O, never raising.

The webhook and the reconciler must never disagree about what is valid, so these checks are thin
compositions of the functions the reconciler already runs (``plan_entry``, ``check_schema``,
``check_flag``). The webhook adds only what makes sense *before* storing: names of target
namespaces, and ConfigSchema backward compatibility (whether an update would break entries that
are valid today).

Every check returns a list of :class:`Violation` and never raises: an exception in an admission
webhook is an error answer, which with ``failurePolicy: Fail`` refuses the request without telling
the user why. Anything unexpected becomes a violation at ``spec`` instead.

A denial reaches whoever sent the request, so it speaks only of the object in the request: the
compatibility check names the entries a schema change would break, never their data. (Values an
entry *inherits* are part of that entry's resolved configuration, which is what is checked.)

The webhook handlers (``ferry.webhooks.handlers``) are a few lines each over the functions here:
which requests are checked (:func:`is_checked`), who the object is (:func:`identity`), what to
read live before refusing an entry (:func:`next_to_read`), and what the mutating webhook writes
(:func:`stamp`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.domain import kinds
from ferry.domain.entry import DEFAULT_FORMAT, plan_entry, references
from ferry.domain.errors import Invalid, Violation
from ferry.domain.flags import check_flag
from ferry.domain.frozen import remembered
from ferry.domain.jsonschema import MAX_DATA_DEPTH, check_schema, is_flat
from ferry.domain.jsonschema.walk import LEAVES
from ferry.domain.labels import CHANGED_AT, CHANGED_BY, FINALIZER
from ferry.domain.names import is_namespace_name, is_object_name
from ferry.domain.secrets import refresh_interval_violations

__all__ = [
    "BACKWARD",
    "COMPATIBILITY_NONE",
    "NESTED_TOO_DEEPLY",
    "Stamp",
    "cheap_to_check",
    "check_entry",
    "check_flag",
    "check_schema_change",
    "check_schema_request",
    "denial_message",
    "finalizers_on_create",
    "identity",
    "is_checked",
    "next_to_read",
    "stamp",
    "stamp_changes",
]

BACKWARD = "Backward"
COMPATIBILITY_NONE = "None"


#: What a user reads for data nested past what can even be decoded (Python's recursion limit);
#: the domain's own, lower bound (MAX_DATA_DEPTH) produces a violation with a path instead.
NESTED_TOO_DEEPLY = (
    f"is nested too deeply to be checked (configuration data may nest at most "
    f"{MAX_DATA_DEPTH} levels)"
)
#: How many violations one denial message lists before counting the rest. kubectl prints the
#: message on one line; thousands of lines would hide the first, most useful ones.
MAX_LISTED = 50


#: ``check_entry`` is cheap enough to run where a person waits for it, without a worker process
#: (``ferry.reconcile.isolation``), only if the entry's spec and its bases' specs hold at most
#: this many values (each key's value, each list item), ...
CHEAP_VALUES = 128
#: ... this many characters of keys and strings, ...
CHEAP_CHARS = 16_384
#: ... nest at most this deep (a violation deep down is reported through every level above), ...
CHEAP_DEPTH = 16
#: ... are rendered to one of these formats (YAML and properties files are written by slower
#: pure-Python code), ...
CHEAP_FORMATS = frozenset({"json", "env", "files"})
#: ... and the schema, if any, is flat (``ferry.domain.jsonschema.is_flat``) and small enough
#: to be compiled on the spot: at most this many values, ...
CHEAP_SCHEMA_VALUES = 8_192
#: ... characters, ...
CHEAP_SCHEMA_CHARS = 32_768
#: ... and levels (two per level of data: ``properties``, then the property's name).
CHEAP_SCHEMA_DEPTH = 2 * CHEAP_DEPTH + 2
# The worst case within these bounds is measured by bench/inline_checks.py (decision 0027).


def cheap_to_check(
    spec: Mapping[str, Any],
    bases: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
) -> bool:
    """Whether ``check_entry`` over this input costs at most a few milliseconds, whatever the
    input (``bases``, ``schemas``: what the check will read, as ``check_entry`` takes them).

    Every step of the check (merging bases, rendering, hashing, the size limit) is linear in
    the size bounded here, and validation against a flat schema applies each subschema at most
    once; anything else (a larger entry, YAML, a schema with combinators, references or
    ``items``) may cost more, and is checked in a worker process with a time limit. The
    schema's size is bounded before asking whether it is flat: that question compiles it (once
    per distinct schema), on the thread this decision is made for.
    """
    target = spec.get("target")
    fmt = target.get("format") if isinstance(target, Mapping) else None
    if (fmt or DEFAULT_FORMAT) not in CHEAP_FORMATS:
        return False
    if not _within([spec, *bases.values()], CHEAP_VALUES, CHEAP_CHARS, CHEAP_DEPTH):
        return False
    for schema_spec in schemas.values():
        schema = schema_spec.get("schema", {}) if isinstance(schema_spec, Mapping) else None
        if not remembered(schema, "cheap_to_check", _cheap_schema, schema):
            return False
    return True


def _cheap_schema(schema: object) -> bool:
    """The schema's half of :func:`cheap_to_check` (remembered on an indexed schema)."""
    return _within(
        [schema], CHEAP_SCHEMA_VALUES, CHEAP_SCHEMA_CHARS, CHEAP_SCHEMA_DEPTH
    ) and is_flat(schema)


def _within(values: list[Any], count: int, chars: int, depth: int) -> bool:
    """At most ``count`` values below ``values``, ``chars`` characters of keys and strings and
    ``depth`` levels; stops as soon as one is exceeded, so it costs at most what it allows.

    Level by level (breadth first), so a value is visited without noting its depth beside it:
    this walk is a third of an ordinary inline check's cost when done value by value."""
    level = list(values)
    for _ in range(depth):
        below: list[Any] = []
        for value in level:
            if isinstance(value, str):
                chars -= len(value)
            elif isinstance(value, LEAVES):  # nothing to count; before the slower Mapping check
                continue
            elif isinstance(value, Mapping):
                count -= len(value)
                if count < 0:
                    return False
                for key in value:
                    chars -= len(key) if isinstance(key, str) else 1
                below.extend(value.values())
            elif isinstance(value, list | tuple):
                count -= len(value)
                if count < 0:
                    return False
                below.extend(value)
            if chars < 0:
                return False
        if not below:
            return True
        level = below
    # One level below the deepest allowed: strings may still end here, containers may not.
    for value in level:
        if isinstance(value, Mapping | list | tuple):
            return False
        if isinstance(value, str):
            chars -= len(value)
    return chars >= 0


def _unexpected(path: str, error: BaseException) -> Violation:
    text = str(error) or type(error).__name__
    return Violation(path, f"could not be checked: {text[:300]}")


def _target_name_violations(spec: Mapping[str, Any]) -> list[Violation]:
    target = spec.get("target")
    if not isinstance(target, Mapping):
        return []
    found: list[Violation] = []
    namespaces = target.get("namespaces")
    if isinstance(namespaces, list):
        for i, namespace in enumerate(namespaces):
            if not (isinstance(namespace, str) and is_namespace_name(namespace)):
                found.append(
                    Violation(
                        f"spec.target.namespaces[{i}]",
                        f"{namespace!r} is not a valid namespace name (RFC 1123 label: lower-case "
                        "letters, digits and '-', starting and ending with a letter or digit, "
                        "at most 63 characters)",
                    )
                )
    name = target.get("name")
    if name is not None and not (isinstance(name, str) and is_object_name(name)):
        found.append(
            Violation(
                "spec.target.name",
                f"{name!r} is not a valid ConfigMap name (RFC 1123 subdomain: lower-case letters, "
                "digits, '-' and '.', at most 253 characters)",
            )
        )
    return found


def check_entry(
    namespace: str,
    name: str,
    spec: object,
    entries: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
    *,
    vault_paths: Sequence[str] | None = (),
    min_refresh: float = 0.0,
) -> list[Violation]:
    """Every reason ConfigEntry ``namespace/name`` with ``spec`` must not be stored; empty if fine.

    ``entries`` and ``schemas`` map names to specs in ``namespace`` (the stored ones; this entry's
    own stored spec, if any, is replaced by ``spec``). This is ``plan_entry`` — the reconciler's
    own check: bases and schema exist, resolved data satisfies the schema, rendering works and
    fits in a ConfigMap — plus the target names, which the reconciler would only discover when
    the API server refuses the write.
    """
    if not isinstance(spec, Mapping):
        return [Violation("spec", "must be an object")]
    try:
        violations = _target_name_violations(spec)
    except Exception as error:  # defensive: a spec shape nobody foresaw
        violations = [_unexpected("spec.target", error)]
    try:
        plan_entry(
            name,
            spec,
            entries=entries,
            schemas=schemas,
            vault_paths=vault_paths,
            namespace=namespace,
        )
    except Invalid as invalid:
        violations += invalid.violations
    except RecursionError:
        violations.append(Violation("spec", "is nested too deeply to be checked"))
    except Exception as error:
        violations.append(_unexpected("spec", error))
    violations += refresh_interval_violations(spec.get("refreshInterval"), minimum=min_refresh)
    return sorted(set(violations))


def _planned_violations(
    name: str,
    spec: Mapping[str, Any],
    entries: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
) -> list[Violation]:
    try:
        plan_entry(name, spec, entries=entries, schemas=schemas)
    except Invalid as invalid:
        return list(invalid.violations)
    except RecursionError:
        return [Violation("spec", "is nested too deeply to be checked")]
    except Exception as error:
        return [_unexpected("spec", error)]
    return []


def _counted(violations: list[Violation]) -> str:
    return f"{len(violations)} violation{'s' if len(violations) != 1 else ''}"


def check_schema_change(
    namespace: str,
    name: str,
    new_spec: object,
    entries: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
) -> list[Violation]:
    """Every reason ConfigSchema ``namespace/name`` must not become ``new_spec``; empty if fine.

    The schema must be usable (valid for its draft, local ``$ref`` only, RE2 patterns). With
    ``compatibility: Backward`` (the default) an update must also keep every entry that uses the
    schema valid: each entry in ``entries`` referring to it is planned again with the new schema,
    and each one that is valid today but would not be is named, with its first violations.
    Entries already invalid today do not block the update (it does not break them), and a newly
    created schema has nothing to be compatible with. ``schemas`` holds the stored schemas.
    """
    if not isinstance(new_spec, Mapping):
        return [Violation("spec", "must be an object")]
    violations = check_schema(new_spec.get("schema"), "spec.schema")
    compatibility = new_spec.get("compatibility", BACKWARD)
    if compatibility not in (BACKWARD, COMPATIBILITY_NONE):
        violations.append(
            Violation("spec.compatibility", f"must be {BACKWARD} or {COMPATIBILITY_NONE}")
        )
    old_spec = schemas.get(name)
    if violations or compatibility != BACKWARD or old_spec is None:
        return sorted(set(violations))
    try:
        users = sorted(
            entry_name
            for entry_name, spec in entries.items()
            if isinstance(spec, Mapping) and references(spec)[0] == name
        )
        proposed = {**schemas, name: new_spec}
        for user in users:
            spec = entries[user]
            after = _planned_violations(user, spec, entries, proposed)
            if not after or _planned_violations(user, spec, entries, schemas):
                continue  # still valid, or already invalid before this update
            violations.append(
                Violation(
                    "spec.schema",
                    f'would make {kinds.CONFIG_ENTRY.kind} "{user}" invalid ({_counted(after)}); '
                    f"fix the entry first, or set spec.compatibility: {COMPATIBILITY_NONE}",
                )
            )
    except Exception as error:  # defensive: the answer must be a denial, never an error
        violations.append(_unexpected("spec.schema", error))
    return sorted(set(violations))


def denial_message(
    kind: str, namespace: str | None, name: str | None, violations: Iterable[Violation]
) -> str:
    """The one line kubectl prints after ``admission webhook "…" denied the request:``.

    Names the object (as ``kubectl get`` would), then every violation with its JSON path, so one
    failed ``kubectl apply`` shows everything to fix. Past :data:`MAX_LISTED` the rest are counted.
    """
    listed = sorted(set(violations))
    shown = "; ".join(str(v) for v in listed[:MAX_LISTED])
    if len(listed) > MAX_LISTED:
        shown += f"; and {len(listed) - MAX_LISTED} more"
    where = f"{namespace}/{name}" if namespace else str(name)
    return f"{kind} {where} is invalid: {shown}"


def _annotations(body: Mapping[str, Any] | None) -> Mapping[str, Any]:
    metadata = (body or {}).get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def stamp_changes(
    operation: str | None,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    username: str,
    now: str,
) -> dict[str, str | None]:
    """The ``changed-by``/``changed-at`` annotations the mutating webhook sets (``None``: remove).

    Stamped on create and on every update that changes ``spec``: the revision history records who
    changed the *configuration*. An update that leaves ``spec`` alone (the operator adding its
    finalizer, someone adding a label) keeps the stored stamp, and a stamp edited by hand is put
    back, so the annotations can be trusted to name whoever last changed the content.
    Only keys whose value must change are returned; an empty dict means no patch.
    """
    current = _annotations(new)
    if operation == "CREATE" or (old or {}).get("spec") != (new or {}).get("spec"):
        wanted: dict[str, str | None] = {CHANGED_BY: username, CHANGED_AT: now}
    else:
        previous = _annotations(old)
        wanted = {key: previous.get(key) for key in (CHANGED_BY, CHANGED_AT)}
    return {key: value for key, value in wanted.items() if current.get(key) != value}


def finalizers_on_create(operation: str | None, new: Mapping[str, Any] | None) -> list[str] | None:
    """The finalizers a new object is stored with: its own plus Ferry's (``None``: no change).

    Added by the mutating webhook, which is called on every create anyway, so the object never
    needs a separate update (an API write, a watch event, a reconcile) just for the finalizer.
    The reconciler still adds it to objects stored while the webhook was off.
    """
    if operation != "CREATE":
        return None
    meta = (new or {}).get("metadata") or {}
    finalizers = meta.get("finalizers") or []
    if not isinstance(finalizers, list) or FINALIZER in finalizers:
        return None
    return [*finalizers, FINALIZER]


# ------------------------------------------------------------------- what the handlers ask


def identity(body: Mapping[str, Any] | None) -> tuple[str, str]:
    """The namespace and name a denial names (``generateName`` when the name is not chosen yet)."""
    meta = (body or {}).get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or meta.get("generateName") or "")


def _deleting(body: Mapping[str, Any] | None) -> bool:
    meta = (body or {}).get("metadata")
    return isinstance(meta, Mapping) and bool(meta.get("deletionTimestamp"))


def is_checked(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> bool:
    """Whether a request is checked at all.

    Updates that leave ``spec`` alone are not: the operator must be able to add or remove its
    finalizer, and users to label, an object stored before the webhook existed (or made invalid
    by a ``compatibility: None`` schema change). Objects being deleted are let go.
    """
    if _deleting(new):
        return False
    return not (
        operation == "UPDATE" and old is not None and old.get("spec") == (new or {}).get("spec")
    )


class _Replaced(Mapping[str, Mapping[str, Any]]):
    """``specs`` with ``name`` replaced by ``spec`` (or hidden, for ``None``), without copying."""

    def __init__(
        self, specs: Mapping[str, Mapping[str, Any]], name: str, spec: Mapping[str, Any] | None
    ) -> None:
        self._specs, self._name, self._spec = specs, name, spec

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        if key == self._name:
            if self._spec is None:
                raise KeyError(key)
            return self._spec
        return self._specs[key]

    def __iter__(self) -> Iterator[str]:
        others = (key for key in self._specs if key != self._name)
        yield from others
        if self._spec is not None:
            yield self._name

    def __len__(self) -> int:
        return sum(1 for _ in self)


def check_schema_request(
    operation: str | None,
    namespace: str,
    name: str,
    new_spec: object,
    old_spec: object,
    entries: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
) -> list[Violation]:
    """:func:`check_schema_change` for an admission request: the request's own ``oldObject`` is
    what is stored "today" (authoritative even when ``schemas``, read from an index, lags), and a
    create has nothing stored to be compatible with."""
    today = old_spec if operation == "UPDATE" and isinstance(old_spec, Mapping) else None
    return check_schema_change(namespace, name, new_spec, entries, _Replaced(schemas, name, today))


def next_to_read(
    name: str,
    spec: Mapping[str, Any],
    entries: Mapping[str, Mapping[str, Any]],
    read: set[tuple[str, str]],
) -> tuple[kinds.Kind, str] | None:
    """The next schema or base entry that ConfigEntry ``name`` with ``spec`` rests on and that
    is not in ``read`` (``(kind, name)`` pairs); ``None`` when none is left.

    The index the webhook reads trails the API server: ``kubectl apply -f`` of a schema and an
    entry in one file sends them milliseconds apart, and a schema relaxed or a base changed just
    before the entry that needs it is still the old version there. Before refusing, the caller
    reads what this names, puts it into ``entries`` (a base's own bases are found through it on
    the next call), and asks again, within its own budget of reads.
    """
    schema_name, bases = references(spec)
    if schema_name is not None and (kinds.CONFIG_SCHEMA.kind, schema_name) not in read:
        return kinds.CONFIG_SCHEMA, schema_name
    pending, seen = list(bases), {name}
    while pending:
        base = pending.pop()
        if base in seen:
            continue
        seen.add(base)
        if (kinds.CONFIG_ENTRY.kind, base) not in read:
            return kinds.CONFIG_ENTRY, base
        if base in entries:
            pending.extend(references(entries[base])[1])
    return None


@dataclass(frozen=True)
class Stamp:
    """What the mutating webhook writes: annotation changes (``None``: remove) and, on create,
    the finalizers to store the object with (``None``: leave them)."""

    annotations: dict[str, str | None]
    finalizers: list[str] | None


def stamp(
    operation: str | None,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    username: str,
    now: str,
) -> Stamp:
    """The whole mutation for one request: :func:`stamp_changes` and :func:`finalizers_on_create`;
    nothing for an object being deleted."""
    if _deleting(new):
        return Stamp({}, None)
    return Stamp(
        stamp_changes(operation, old, new, username, now), finalizers_on_create(operation, new)
    )
