"""JSON Schema for ConfigSchemas and ConfigEntry data: two functions, total and bounded.

    check_schema(schema) -> list[Violation]     may this document be a ConfigSchema?
    validate(data, schema) -> list[Violation]   every way ``data`` fails ``schema``

Schemas come from users and run thousands of times inside the operator and the admission
webhook, so both are:

* **Total.** They never raise. Every problem, including a schema that cannot be applied, a
  ``$ref`` that does not resolve or data nested 10,000 levels deep, becomes a :class:`Violation`,
  because an exception in a webhook or a handler turns one bad resource into an outage or an
  endless retry loop.
* **Without I/O.** A ``$ref`` is resolved only inside the schema document itself (and, to check a
  schema, the bundled meta-schemas); the registry refuses everything else (``dialects``).
* **Linear in regexes.** ``pattern`` and ``patternProperties`` (and the keywords that consult
  them) run on RE2 (``regex``, ``keywords``); a pattern RE2 cannot express is refused.
* **Within a complexity budget** (``budget``): subschema count, ``$ref`` expansion, fan-out over
  one value, recursion and ``uniqueItems``, checked when a schema is admitted and before it is
  applied.

``format`` is an annotation, not an assertion (the 2020-12 default), so formats are not checked.
Built on jsonschema through its public extension API (``jsonschema.validators.extend``).
Decisions: docs/decisions/0008-validation-safety.md and 0016-module-layout.md.
"""

from ferry.domain.jsonschema.budget import (
    MAX_EXPANDED,
    MAX_FAN_OUT,
    MAX_SUBSCHEMAS,
    MAX_UNIQUE_ITEMS,
    TOO_COSTLY,
    check_budget,
    is_too_costly,
)
from ferry.domain.jsonschema.data import MAX_DATA_DEPTH, check_depth, is_flat, validate
from ferry.domain.jsonschema.schemas import MAX_SCHEMA_DEPTH, check_schema

__all__ = [
    "MAX_DATA_DEPTH",
    "MAX_EXPANDED",
    "MAX_FAN_OUT",
    "MAX_SCHEMA_DEPTH",
    "MAX_SUBSCHEMAS",
    "MAX_UNIQUE_ITEMS",
    "TOO_COSTLY",
    "check_budget",
    "check_depth",
    "check_schema",
    "is_flat",
    "is_too_costly",
    "validate",
]
