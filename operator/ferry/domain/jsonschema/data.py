"""``validate``: every way configuration data fails a schema, bounded and never raising."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from referencing.exceptions import Unresolvable

from ferry.domain.errors import Violation, field_path
from ferry.domain.hashing import canonical_json
from ferry.domain.jsonschema.budget import TOO_COSTLY, check_budget
from ferry.domain.jsonschema.dialects import REGISTRY, draft_for
from ferry.domain.jsonschema.keywords import safe_class
from ferry.domain.jsonschema.schemas import MAX_SCHEMA_DEPTH, truncate
from ferry.domain.jsonschema.split import Problem, Split, flat, splittable
from ferry.domain.jsonschema.walk import nested_dialect, too_deep

#: Deepest nesting of objects/arrays accepted in configuration data. Real configuration is rarely
#: deeper than 10; the bound keeps every recursive step (validation, merge, rendering) far from
#: Python's recursion limit.
MAX_DATA_DEPTH = 64
_TOO_DEEP = f"cannot validate: schema is nested too deeply ({MAX_SCHEMA_DEPTH})"


@dataclass(frozen=True)
class _Compiled:
    validator: Any = None
    problem: str | None = None
    split: Split | None = None
    """The same validation a property at a time, where that is exact (``split``)."""
    flat: bool = False
    """Validating any document costs one pass over its top-level values (``split.flat``)."""

    def problems(self, instance: object) -> Iterator[Problem]:
        """Each error as (path, message): the split's if it answers, else the whole schema's
        (which also says why a ``$ref`` does not resolve or never stops)."""
        if self.split is not None:
            try:
                return iter(self.split.problems(instance))
            except Exception:  # the whole validation below says what went wrong
                pass
        return ((tuple(e.absolute_path), e.message) for e in self.validator.iter_errors(instance))


@functools.lru_cache(maxsize=512)
def _compiled(canonical: str) -> _Compiled:
    """A ready validator per distinct schema text; the same schema is applied thousands of times.

    Keyed by canonical JSON, so key order or whitespace differences share one entry, and built
    from a private parse of that text, so no caller can mutate a cached schema. A schema over the
    complexity budget (stored while the webhook was off, say) is never applied.
    """
    schema = json.loads(canonical)
    if too_deep(schema, MAX_SCHEMA_DEPTH) is not None:
        return _Compiled(problem=_TOO_DEEP)
    draft = draft_for(schema)
    if draft is None:
        return _Compiled(problem=f"cannot validate: unknown $schema {schema['$schema']!r}")
    if (nested := nested_dialect(schema)) is not None:
        where = field_path("", nested)
        return _Compiled(
            problem=f"cannot validate: $schema is only allowed at the root of the schema ({where})"
        )
    if over := check_budget(schema, "schema"):
        return _Compiled(
            problem=f"{TOO_COSTLY}: cannot validate: the schema is over the complexity budget ("
            + "; ".join(f"{v.path}: {v.message.removeprefix(TOO_COSTLY + ': ')}" for v in over)
            + ")"
        )
    cls = safe_class(draft)
    split = Split(schema, cls, REGISTRY) if splittable(schema, draft) else None
    return _Compiled(
        validator=cls(schema, registry=REGISTRY), split=split, flat=flat(schema, draft)
    )


def is_flat(schema: object) -> bool:
    """Whether validating data against ``schema`` costs at most one pass over the data's
    top-level values and the strings and lists they hold (``split.flat``; False for a schema
    that cannot be applied at all)."""
    try:
        return _compiled(canonical_json(schema)).flat
    except Exception:  # not serialisable, nested too deeply: certainly not flat
        return False


def check_depth(instance: object, path: str = "spec.data") -> list[Violation]:
    """A violation if ``instance`` nests deeper than ``MAX_DATA_DEPTH``: bounds the work every
    later step (merge, hash, render, validate) does on hostile input, with or without a schema."""
    if (deep := too_deep(instance, MAX_DATA_DEPTH)) is not None:
        message = f"data is nested deeper than {MAX_DATA_DEPTH} levels"
        return [Violation(field_path(path, deep), message)]
    return []


def validate(instance: object, schema: object, path: str = "spec.data") -> list[Violation]:
    """Every way ``instance`` fails ``schema``, each at the full path of the offending value.

    Sorted and deduplicated, so status and webhook messages are stable between reconciles. Never
    raises: a schema that cannot be applied (unresolvable ``$ref``, unsupported regex, infinite
    ``$ref`` recursion, over the complexity budget) yields a violation at ``path`` explaining why,
    after any violations found before the failure.
    """
    if deep := check_depth(instance, path):
        return deep
    try:
        # The schema's depth is checked once per distinct schema, in ``_compiled``; nesting
        # too deep to serialise at all is the same verdict.
        compiled = _compiled(canonical_json(schema))
    except RecursionError:
        return [Violation(path, _TOO_DEEP)]
    except Exception as error:
        return [Violation(path, truncate(f"cannot validate: schema is unusable: {error}"))]
    if compiled.problem is not None:
        return [Violation(path, truncate(compiled.problem))]

    violations: set[Violation] = set()
    try:
        for where, message in compiled.problems(instance):
            violations.add(Violation(field_path(path, where), truncate(message)))
    except RecursionError:
        violations.add(Violation(path, "cannot validate: the schema's $ref recursion never ends"))
    except Unresolvable as error:
        ref = getattr(error, "ref", "?")
        message = f'cannot validate: $ref "{ref}" does not resolve within the schema'
        violations.add(Violation(path, truncate(f"{message} (Ferry never fetches schemas)")))
    except Exception as error:
        violations.add(Violation(path, truncate(f"cannot validate: {error}")))
    return sorted(violations)
