"""What a ConfigEntry should become: resolve, validate, render, hash — one function, two callers.

The admission webhook calls ``plan_entry`` to refuse bad input before it is stored; the reconciler
calls it again before anything reaches a workload (defence in depth: an entry stored while the
webhook was off is still never materialised if invalid). Both see the same violations.
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.domain.errors import Invalid, Violation
from ferry.domain.hashing import content_hash
from ferry.domain.jsonschema import TOO_COSTLY, check_depth, is_too_costly, validate
from ferry.domain.merge import resolve
from ferry.domain.render import check_size, render
from ferry.domain.secrets import (
    SecretRef,
    env_key_collisions,
    parse_secret_data,
    path_violations,
    secret_data_violations,
)
from ferry.domain.targets import object_name

DEFAULT_FORMAT = "json"


@dataclass(frozen=True)
class EntryPlan:
    data: dict[str, Any]  # the resolved content: bases merged, this entry last
    bases: tuple[str, ...]  # every entry name used, transitively
    schema: str | None
    format: str
    object_name: str
    rendered: dict[str, str]  # the ConfigMap's ``data``
    secrets: tuple[SecretRef, ...] = ()  # the Secret's keys and where Vault holds their values

    # The hashes are computed when first read: an admission check plans an entry only to learn
    # whether it can be planned, and never reads them.
    @functools.cached_property
    def hash(self) -> str:
        """Content hash of ``data``: what revisions are keyed on."""
        return content_hash(self.data)

    @functools.cached_property
    def rendered_hash(self) -> str:
        """Content hash of ``rendered``."""
        return content_hash(self.rendered)


def revision_content(data: Mapping[str, Any], secrets: Sequence[Mapping[str, Any]]) -> Any:
    """What a revision records and hashes: the resolved data, and with ``secretData`` the
    record of each resolved secret (reference, Vault version, keyed hash; never a value), so
    a rotation is a new revision and rolls ``reload-on`` workloads (docs/secrets.md)."""
    if not secrets:
        return dict(data)  # unchanged for entries without secrets: same hashes as before
    return {"data": dict(data), "secrets": list(secrets)}


def split_content(content: Any, spec: Mapping[str, Any] | None) -> tuple[Any, list[Any]]:
    """A revision's ``(data, secret records)``, undoing :func:`revision_content`. The recorded
    spec says whether the content was wrapped (it named ``secretData``), so a user's own data
    that happens to look like the wrapper is never mistaken for it."""
    if isinstance(spec, Mapping) and spec.get("secretData") and isinstance(content, Mapping):
        return content.get("data"), list(content.get("secrets") or [])
    return content, []


def references(spec: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """The schema name and direct base names an entry refers to, tolerating malformed specs."""
    schema_ref = spec.get("schemaRef")
    schema = schema_ref.get("name") if isinstance(schema_ref, Mapping) else None
    inherits = spec.get("inherits")
    bases = tuple(
        str(item["name"])
        for item in (inherits if isinstance(inherits, list) else [])
        if isinstance(item, Mapping) and isinstance(item.get("name"), str)
    )
    return (schema if isinstance(schema, str) else None), bases


def plan_entry(
    name: str,
    spec: Mapping[str, Any],
    *,
    entries: Mapping[str, Mapping[str, Any]],
    schemas: Mapping[str, Mapping[str, Any]],
    vault_paths: Sequence[str] | None = (),
    namespace: str = "",
) -> EntryPlan:
    """Plan one entry. ``entries`` and ``schemas`` map names to specs in the entry's namespace.

    ``vault_paths``: the Vault path prefixes ``namespace`` may name in ``secretData`` (its
    ``ferry.dev/vault-paths`` annotation with the operator's setting); empty: no secretData;
    None: paths are not checked (offline tools that cannot know the operator's settings).

    Raises ``Invalid`` listing every violation found: a missing schema or base, each schema
    violation with its JSON path, render errors and the size limit.
    """
    if deep := check_depth(spec.get("data")):
        raise Invalid("InvalidData", deep)
    # Lazy: only bases are read. ChainMap only writes to its first map, never to ``entries``.
    resolved = resolve(name, ChainMap({name: spec}, entries))  # type: ignore[arg-type]
    schema_name, _ = references(spec)
    target: Mapping[str, Any] = spec.get("target") or {}
    if not isinstance(target, Mapping):
        target = {}
    fmt = str(target.get("format") or DEFAULT_FORMAT)

    violations: list[Violation] = []
    reason = "SchemaViolation"
    secret_refs: tuple[SecretRef, ...] = ()
    if spec.get("secretData") is not None:
        found = secret_data_violations(spec.get("secretData"), env_names=fmt == "env")
        if not found:
            secret_refs = parse_secret_data(spec.get("secretData"), env_names=fmt == "env")
            # Tenant A must not make Ferry copy tenant B's secrets (docs/secrets.md).
            if vault_paths is not None:
                found = path_violations(secret_refs, namespace, tuple(vault_paths))
        if found:
            reason = "InvalidSecretData"
            violations += found
    if schema_name is not None:
        schema_spec = schemas.get(schema_name)
        if schema_spec is None:
            reason = "MissingSchema"
            violations.append(
                Violation("spec.schemaRef.name", f'ConfigSchema "{schema_name}" not found')
            )
        else:
            found = validate(resolved.data, schema_spec.get("schema", {}), "spec.data")
            if any(is_too_costly(v) for v in found):
                # The schema, not the data, is at fault: say which one (issue 11).
                reason = TOO_COSTLY
                found = [
                    Violation("spec.schemaRef.name", f'ConfigSchema "{schema_name}": {v}')
                    if is_too_costly(v)
                    else v
                    for v in found
                ]
            violations += found

    rendered: dict[str, str] = {}
    try:
        rendered = render(resolved.data, fmt)
        check_size(rendered)
    except Invalid as exc:
        if not violations:
            reason = exc.reason
        violations += exc.violations
    if fmt == "env" and (clash := env_key_collisions(secret_refs, rendered)):
        reason = reason if violations else "InvalidSecretData"
        violations += clash
    if violations:
        raise Invalid(reason, violations)

    return EntryPlan(
        data=resolved.data,
        bases=resolved.bases,
        schema=schema_name,
        format=fmt,
        object_name=object_name(name, target),
        rendered=rendered,
        secrets=secret_refs,
    )
