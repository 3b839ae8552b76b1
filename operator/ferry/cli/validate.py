"""``ferry validate``: the admission webhook's checks, before anything reaches a cluster.

It calls the very functions the webhook calls (``ferry.domain.admission``) and prints the very
message the webhook denies with, so a CI job fails for exactly the reasons ``kubectl apply``
would. Input is read as ``kubectl apply -f`` reads it (files, directories, ``-R``, ``-``), and
references (``schemaRef``, ``inherits``) resolve across everything given. With ``--cluster`` the
live ConfigEntries and ConfigSchemas of the namespaces involved fill in what the files do not
hold (the files win, as they would once applied), and a ConfigSchema change is checked for
backward compatibility against the stored version, as the webhook does.

:func:`check` is pure; the command around it reads the files and, with ``--cluster``, the
cluster (as the caller, through their kubeconfig).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import yaml

from ferry.adapters.kube_caller import Cluster
from ferry.cli.errors import CliError, reported
from ferry.cli.manifests import Document, read_manifests
from ferry.cli.options import identity, identity_options
from ferry.domain import kinds
from ferry.domain.admission import check_entry, check_flag, check_schema_change, denial_message
from ferry.domain.errors import Violation

DEFAULT_NAMESPACE = "default"
#: The name an entry without ``schemaRef`` is checked against when ``--schema`` is a bare JSON
#: Schema document; never seen by a user, because schema violations name data paths only.
_BARE_SCHEMA = "ferry-validate-schema"
_ENTRY, _SCHEMA, _FLAG = kinds.CONFIG_ENTRY.kind, kinds.CONFIG_SCHEMA.kind, kinds.FEATURE_FLAG.kind

#: Specs by namespace, then by name: what an object may refer to.
Specs = Mapping[str, Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class Manifest:
    """A Ferry object read from the input."""

    kind: str
    namespace: str
    name: str
    spec: Any
    where: str = ""  # file and document number, for the report


@dataclass(frozen=True)
class Finding:
    kind: str
    namespace: str
    name: str
    violations: tuple[Violation, ...]
    where: str = ""

    @property
    def valid(self) -> bool:
        return not self.violations

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def message(self) -> str:
        """The webhook's own message (``… is invalid: <path>: <why>; …``), or ``… is valid``."""
        if self.valid:
            return f"{self.ref} is valid"
        return denial_message(self.kind, self.namespace, self.name, self.violations)


@dataclass(frozen=True)
class Live:
    """What the cluster holds, by namespace: the stored entries and schemas."""

    entries: Specs = field(default_factory=dict)
    schemas: Specs = field(default_factory=dict)


# --------------------------------------------------------------------------------- pure


def ferry_objects(documents: Iterable[Document], default_namespace: str) -> list[Manifest]:
    """The ConfigSchemas, ConfigEntries and FeatureFlags among ``documents``; other kinds are
    skipped, so a whole manifests directory (or a ``kustomize build``) can be given."""
    found: list[Manifest] = []
    for doc in documents:
        body = doc.body
        if not isinstance(body, Mapping) or body.get("kind") not in kinds.BY_NAME:
            continue
        api_version = str(body.get("apiVersion") or kinds.API_VERSION)
        if not api_version.startswith(f"{kinds.GROUP}/"):
            continue  # the same kind name in another API group is not Ferry's
        if api_version != kinds.API_VERSION:
            raise CliError(
                f'{doc.where} ({body["kind"]}): apiVersion "{api_version}" is not served; '
                f"Ferry serves {kinds.API_VERSION}"
            )
        metadata = body.get("metadata")
        meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise CliError(f"{doc.where} ({body['kind']}): metadata.name is missing")
        namespace = meta.get("namespace") or default_namespace
        found.append(Manifest(str(body["kind"]), str(namespace), name, body.get("spec"), doc.where))
    return found


def _specs(objects: Iterable[Manifest], kind: str) -> dict[str, dict[str, Mapping[str, Any]]]:
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for obj in objects:
        if obj.kind == kind and isinstance(obj.spec, Mapping):
            out.setdefault(obj.namespace, {})[obj.name] = obj.spec
    return out


def _overlay(*layers: Specs) -> dict[str, dict[str, Mapping[str, Any]]]:
    """The state once each layer is applied over the one before: later objects replace
    earlier ones of the same name."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for layer in layers:
        for namespace, specs in layer.items():
            out.setdefault(namespace, {}).update(specs)
    return out


def check(
    objects: Sequence[Manifest],
    *,
    live: Live | None = None,
    references: Sequence[Manifest] = (),
    bare_schema: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """A finding for each of ``objects``, in order, with every reason the webhook would refuse
    it. References resolve across ``objects``, then ``references`` (given for that purpose and
    not reported), then ``live`` (what the cluster holds).

    An object given more than once is checked each time with its own spec, as ``kubectl apply``
    would send each; what others refer to is the last one, as the cluster would hold it."""
    live = live or Live()
    entries = _overlay(live.entries, _specs(references, _ENTRY), _specs(objects, _ENTRY))
    schemas = _overlay(live.schemas, _specs(references, _SCHEMA), _specs(objects, _SCHEMA))
    findings: list[Finding] = []
    for obj in objects:
        key = (obj.kind, obj.namespace, obj.name)
        spec = obj.spec
        if obj.kind == _ENTRY:
            in_ns = dict(schemas.get(obj.namespace, {}))
            if bare_schema is not None and isinstance(spec, Mapping) and "schemaRef" not in spec:
                in_ns[_BARE_SCHEMA] = {"schema": bare_schema}
                spec = {**spec, "schemaRef": {"name": _BARE_SCHEMA}}
            # Vault paths are the operator's to allow (its settings and the namespace's
            # annotation): the webhook checks them; offline they are not judged.
            violations = check_entry(
                obj.namespace,
                obj.name,
                spec,
                entries.get(obj.namespace, {}),
                in_ns,
                vault_paths=None,
            )
        elif obj.kind == _SCHEMA:
            # Against the stored version when the cluster was read (backward compatibility, as
            # the webhook checks it); otherwise as on creation: a usable schema.
            stored = live.schemas.get(obj.namespace, {})
            violations = check_schema_change(
                obj.namespace, obj.name, spec, entries.get(obj.namespace, {}), stored
            )
        else:
            violations = check_flag(spec)
        findings.append(Finding(*key, tuple(violations), obj.where))
    return findings


def report(findings: Sequence[Finding]) -> dict[str, Any]:
    """The machine-readable report (``-o json|yaml``)."""
    invalid = [f.ref for f in findings if not f.valid]
    return {
        "valid": not invalid,
        "checked": len(findings),
        "invalid": invalid,
        "objects": [
            {
                "kind": f.kind,
                "namespace": f.namespace,
                "name": f.name,
                "source": f.where,
                "valid": f.valid,
                "message": f.message,
                "violations": [{"path": v.path, "message": v.message} for v in f.violations],
            }
            for f in findings
        ],
    }


def summary(findings: Sequence[Finding]) -> str:
    """The last line of a failed run: how many, and every invalid object by name."""
    invalid = [f.ref for f in findings if not f.valid]
    return f"{len(invalid)} of {len(findings)} object(s) invalid: {', '.join(invalid)}"


# --------------------------------------------------------------------------------- I/O


def _bare_schema(documents: Sequence[Document]) -> Mapping[str, Any] | None:
    bare = [d.body for d in documents if isinstance(d.body, Mapping) and "kind" not in d.body]
    if len(bare) > 1:
        raise CliError("--schema: give at most one bare JSON Schema document")
    return bare[0] if bare else None


def read_live(cluster: Cluster, objects: Iterable[Manifest]) -> Live:
    """The stored ConfigEntries and ConfigSchemas of every namespace ``objects`` are in."""
    namespaces = sorted({o.namespace for o in objects if o.kind in (_ENTRY, _SCHEMA)})
    entries: dict[str, dict[str, Mapping[str, Any]]] = {}
    schemas: dict[str, dict[str, Mapping[str, Any]]] = {}
    for namespace in namespaces:
        for kind, into in ((_ENTRY, entries), (_SCHEMA, schemas)):
            for obj in cluster.list(kind, namespace):
                name = (obj.get("metadata") or {}).get("name")
                if isinstance(name, str) and isinstance(obj.get("spec"), Mapping):
                    into.setdefault(namespace, {})[name] = obj["spec"]
    return Live(entries, schemas)


def validate_files(
    files: Sequence[str],
    schema_files: Sequence[str] = (),
    *,
    recursive: bool = False,
    namespace: str | None = None,
    cluster: Cluster | None = None,
) -> list[Finding]:
    """Read ``files`` (and ``schema_files``), optionally the cluster, and :func:`check` them."""
    documents = read_manifests(files, recursive=recursive)
    extra = read_manifests(schema_files, recursive=recursive) if schema_files else []
    default_namespace = namespace or (cluster.namespace if cluster else DEFAULT_NAMESPACE)
    objects = ferry_objects(documents, default_namespace)
    if not objects:
        raise CliError(f"no ConfigSchema, ConfigEntry or FeatureFlag in {', '.join(files)}")
    references = ferry_objects(extra, default_namespace)
    live = read_live(cluster, [*objects, *references]) if cluster is not None else None
    return check(objects, live=live, references=references, bare_schema=_bare_schema(extra))


@click.command()
@click.option(
    "-f",
    "--filename",
    "--file",
    "files",
    multiple=True,
    required=True,
    help="File, directory or - (standard input); repeat for more.",
)
@click.option("-R", "--recursive", is_flag=True, help="Read directories recursively.")
@click.option(
    "--schema",
    "schemas",
    multiple=True,
    help="More manifests to resolve references against (not reported), or one bare JSON Schema "
    "for entries without schemaRef.",
)
@click.option("-n", "--namespace", default=None, help="For objects without one (default: default).")
@click.option(
    "--cluster",
    "use_cluster",
    is_flag=True,
    help="Also resolve against the live cluster's ConfigEntries and ConfigSchemas (your "
    "kubeconfig), and check schema changes for backward compatibility.",
)
@identity_options
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="table: one line per object, as the webhook words it.",
)
@reported
def validate(
    files: tuple[str, ...],
    recursive: bool,
    schemas: tuple[str, ...],
    namespace: str | None,
    use_cluster: bool,
    output: str,
    **kw: Any,
) -> None:
    """Check manifests with the admission webhook's checks and messages; exit 1 naming every
    invalid object. Like `kubectl apply -f`: files, directories (-R), - for standard input."""
    cluster = Cluster(identity(kw)) if use_cluster else None
    try:
        findings = validate_files(
            files, schemas, recursive=recursive, namespace=namespace, cluster=cluster
        )
    finally:
        if cluster is not None:
            cluster.close()
    if output == "json":
        click.echo(json.dumps(report(findings), indent=2, ensure_ascii=False))
    elif output == "yaml":
        click.echo(yaml.safe_dump(report(findings), sort_keys=False, allow_unicode=True), nl=False)
    else:
        for finding in findings:
            click.echo(finding.message)
    if not all(f.valid for f in findings):
        click.echo(summary(findings), err=True)
        raise SystemExit(1)
