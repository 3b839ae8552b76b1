"""``ferry validate``: the admission webhook's checks, offline, for CI pipelines and pre-commit.

It calls the very functions the webhook calls (``ferry.domain.admission``) and prints the very
message the webhook denies with, so a pipeline fails for exactly the reasons ``kubectl apply``
would, before anything reaches a cluster. Offline means it sees only the files it is given: a
base or schema that lives only in the cluster is reported missing, so pass those files too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferry.domain.admission import check_entry, check_flag, check_schema_change, denial_message
from ferry.domain.errors import Violation
from ferry.history.present import KIND_ORDER, HistoryError, NotFound

DEFAULT_NAMESPACE = "default"
#: The name an entry without ``schemaRef`` is checked against when ``--schema`` is a bare JSON
#: Schema document; never seen by a user, because schema violations name data paths only.
_BARE_SCHEMA = "ferry-validate-schema"


@dataclass(frozen=True)
class Finding:
    kind: str
    namespace: str
    name: str
    violations: tuple[Violation, ...]

    @property
    def valid(self) -> bool:
        return not self.violations

    @property
    def message(self) -> str:
        if self.valid:
            return f"{self.kind} {self.namespace}/{self.name} is valid"
        return denial_message(self.kind, self.namespace, self.name, self.violations)


def load_documents(path: str) -> list[Any]:
    """Every YAML (or JSON) document in a file; ``-`` reads standard input."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"file {path} not found") from None
    except OSError as exc:
        raise HistoryError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise HistoryError(f"{path} is not valid YAML: {exc}") from None


def validate_file(files: Sequence[str], schema_files: Sequence[str] = ()) -> list[Finding]:
    """Check every Ferry object in ``files``. ConfigEntries are planned against the entries and
    schemas found in ``files`` and ``schema_files`` (same namespace); a ``schema_files`` document
    that is a bare JSON Schema (no ``kind``) is used for entries that have no ``schemaRef``."""
    objects = [doc for path in files for doc in load_documents(path)]
    schema_docs = [doc for path in schema_files for doc in load_documents(path)]
    bare = [d for d in schema_docs if isinstance(d, Mapping) and "kind" not in d]
    if len(bare) > 1:
        raise HistoryError("--schema: give at most one bare JSON Schema document")
    ferry = [_object(d, i) for i, d in enumerate([*objects, *schema_docs], 1) if _is_ferry(d)]
    entries = _specs(ferry, "ConfigEntry")
    schemas = _specs(ferry, "ConfigSchema")

    findings: list[Finding] = []
    mine = (_object(d, i) for i, d in enumerate(objects, 1) if _is_ferry(d))  # others: skipped
    for kind, namespace, name, spec in mine:
        if kind == "ConfigEntry":
            in_ns = dict(schemas.get(namespace, {}))
            if bare and isinstance(spec, Mapping) and "schemaRef" not in spec:
                in_ns[_BARE_SCHEMA] = {"schema": bare[0]}
                spec = {**spec, "schemaRef": {"name": _BARE_SCHEMA}}
            violations = check_entry(namespace, name, spec, entries.get(namespace, {}), in_ns)
        elif kind == "ConfigSchema":
            # As when it is created: a usable schema. (Backward compatibility needs the stored
            # version, which only the cluster has; the webhook checks that.)
            violations = check_schema_change(namespace, name, spec, entries.get(namespace, {}), {})
        else:
            violations = check_flag(spec)
        findings.append(Finding(kind, namespace, name, tuple(violations)))
    if not findings:
        raise HistoryError(f"no ConfigSchema, ConfigEntry or FeatureFlag in {', '.join(files)}")
    return findings


def _is_ferry(doc: Any) -> bool:
    return isinstance(doc, Mapping) and doc.get("kind") in KIND_ORDER


def _object(doc: Any, number: int) -> tuple[str, str, str, Any]:
    if not _is_ferry(doc):
        kind = doc.get("kind") if isinstance(doc, Mapping) else type(doc).__name__
        raise HistoryError(
            f'document {number}: kind "{kind}" is not ConfigSchema, ConfigEntry or FeatureFlag'
        )
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise HistoryError(f"document {number} ({doc['kind']}): metadata.name is missing")
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    return str(doc["kind"]), str(namespace), name, doc.get("spec")


def _specs(
    objects: Iterable[tuple[str, str, str, Any]], kind: str
) -> dict[str, dict[str, Mapping[str, Any]]]:
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for k, namespace, name, spec in objects:
        if k == kind and isinstance(spec, Mapping):
            out.setdefault(namespace, {})[name] = spec
    return out


def findings_json(findings: Sequence[Finding]) -> str:
    return json.dumps(
        [
            {
                "kind": f.kind,
                "namespace": f.namespace,
                "name": f.name,
                "valid": f.valid,
                "message": f.message,
                "violations": [{"path": v.path, "message": v.message} for v in f.violations],
            }
            for f in findings
        ],
        indent=2,
    )
