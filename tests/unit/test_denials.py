"""The reason code a denial is counted under: from a fixed set, never a tenant's string."""

from __future__ import annotations

import pytest

from ferry.domain.admission import NESTED_TOO_DEEPLY
from ferry.domain.denials import ALLOWED, REASONS, reason_of
from ferry.domain.errors import Violation
from ferry.domain.jsonschema.budget import TOO_COSTLY


@pytest.mark.parametrize(
    ("violations", "reason"),
    [
        ([], ALLOWED),
        (
            [Violation("spec.data.db.poolSize", "500 is greater than the maximum of 100")],
            "DataInvalid",
        ),
        ([Violation('spec.secretData["a.b"]', "is not allowed")], "DataInvalid"),
        ([Violation("spec.schemaRef.name", 'ConfigSchema "x" not found')], "ReferenceInvalid"),
        ([Violation("spec.inherits[0]", "cycle")], "ReferenceInvalid"),
        ([Violation("spec.schema", 'would make ConfigEntry "a" invalid')], "SchemaInvalid"),
        ([Violation("spec.schemaRefX", "odd")], "Other"),  # a prefix of a name is not a field
        ([Violation("spec.target.format", "must be one of")], "TargetInvalid"),
        ([Violation("spec.defaultVariant", "names no variant")], "FlagInvalid"),
        ([Violation("metadata.name", "too long")], "NameInvalid"),
        ([Violation("spec", NESTED_TOO_DEEPLY)], "TooCostly"),
        ([Violation("spec.schema", f"{TOO_COSTLY}: took longer than 3s")], "TooCostly"),
        ([Violation("spec", "could not be checked in time: workers are busy")], "Busy"),
        ([Violation("spec", "could not be checked: KeyError")], "CheckFailed"),
        ([Violation("spec", "must be an object")], "Other"),
        # The first by path decides (violations are reported sorted by path).
        (
            [Violation("spec.target", "bad"), Violation("spec.data.a", "bad")],
            "DataInvalid",
        ),
    ],
)
def test_reason_codes(violations: list[Violation], reason: str) -> None:
    assert reason_of(violations) == reason
    assert reason in REASONS


def test_a_tenant_string_never_becomes_a_reason() -> None:
    tenant = "spec.data.x; DROP TABLE"
    assert reason_of([Violation(tenant, tenant)]) in REASONS
    assert reason_of([Violation("metadata.annotations.evil", "Allowed")]) == "NameInvalid"
