"""Which JSON Schema drafts Ferry applies, and the registry that never fetches anything."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import validators
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource

DRAFTS: tuple[type[Validator], ...] = (
    validators.Draft202012Validator,
    validators.Draft201909Validator,
    validators.Draft7Validator,
    validators.Draft6Validator,
    validators.Draft4Validator,
    validators.Draft3Validator,
)
#: A schema without ``$schema`` is read as 2020-12, the draft the Kubernetes ecosystem writes.
DEFAULT_DRAFT: type[Validator] = validators.Draft202012Validator

#: The keywords that refer to another (sub)schema.
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def meta_id(cls: type[Validator]) -> str:
    """The meta-schema URI of a draft, without the empty fragment."""
    return str(cls.ID_OF(cls.META_SCHEMA)).rstrip("#")  # type: ignore[attr-defined]


DRAFT_BY_URI: dict[str, type[Validator]] = {meta_id(cls): cls for cls in DRAFTS}


def draft_for(schema: Any) -> type[Validator] | None:
    """The draft ``schema`` declares with ``$schema`` (default 2020-12); ``None`` if unknown."""
    if not isinstance(schema, Mapping) or "$schema" not in schema:
        return DEFAULT_DRAFT
    uri = schema["$schema"]
    return DRAFT_BY_URI.get(uri.rstrip("#")) if isinstance(uri, str) else None


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retriever: Ferry never fetches a schema, from anywhere."""
    raise LookupError(f"Ferry does not fetch {uri!r}")


#: Resolves ``$ref`` inside the schema document only; applied to data.
REGISTRY: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]  # attrs alias
#: The same plus the bundled meta-schemas, used when a schema itself is checked.
CHECK_REGISTRY: Registry[Any] = REGISTRY.combine(SPECIFICATIONS)
