"""Why an admission request was refused, as one of a fixed set of codes (a metric label).

The message a user reads names fields and values, some of them a tenant's own strings; a metric
label must never carry those (unbounded series, and one tenant's names readable on ``/metrics``).
So a denial is summed up by the first of its violations (they are sorted by JSON path), mapped
from the field it concerns and a few fixed message prefixes onto :data:`REASONS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ferry.domain.errors import Violation
from ferry.domain.jsonschema.budget import TOO_COSTLY

#: Allowed requests carry this reason.
ALLOWED = "Allowed"
#: Every reason a denial can carry (and :data:`ALLOWED`): the label's whole value set.
REASONS = (
    ALLOWED,
    "DataInvalid",  # spec.data / spec.secretData against the schema, or their form
    "ReferenceInvalid",  # spec.schemaRef, spec.inherits: missing, a cycle, a bad base
    "SchemaInvalid",  # spec.schema, spec.compatibility, a change that breaks live entries
    "TargetInvalid",  # spec.target: names, format, placement
    "FlagInvalid",  # a FeatureFlag's variants, default, state, targeting, bucketing
    "NameInvalid",  # metadata
    "TooCostly",  # validation overran its budget (ValidationTooCostly) or nested too deeply
    "Busy",  # the validation workers could not answer in time: not a verdict, try again
    "CheckFailed",  # the check itself failed (a bug, or an undecodable request)
    "BadRequest",  # not an AdmissionReview for the path, or too large: answered 400/413
    "Other",
)

_BY_FIELD = (
    ("spec.data", "DataInvalid"),
    ("spec.secretData", "DataInvalid"),
    ("spec.schemaRef", "ReferenceInvalid"),
    ("spec.inherits", "ReferenceInvalid"),
    ("spec.schema", "SchemaInvalid"),
    ("spec.compatibility", "SchemaInvalid"),
    ("spec.target", "TargetInvalid"),
    ("spec.variants", "FlagInvalid"),
    ("spec.defaultVariant", "FlagInvalid"),
    ("spec.state", "FlagInvalid"),
    ("spec.targeting", "FlagInvalid"),
    ("spec.bucketing", "FlagInvalid"),
    ("metadata", "NameInvalid"),
)


def reason_of(violations: Sequence[Violation]) -> str:
    """The code of a denial with these violations (:data:`ALLOWED` for none)."""
    if not violations:
        return ALLOWED
    first = min(violations)
    message = first.message
    if TOO_COSTLY in message or message.startswith("is nested too deeply"):
        return "TooCostly"
    if message.startswith("could not be checked in time"):
        return "Busy"
    if message.startswith("could not be checked"):
        return "CheckFailed"
    for prefix, reason in _BY_FIELD:
        if first.path == prefix or first.path.startswith((f"{prefix}.", f"{prefix}[")):
            return reason
    return "Other"
