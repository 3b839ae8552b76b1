"""Pure parts of history, rollback and export: parsing, diffs, tables, export documents and
GitOps detection. No I/O here, so every rule a user sees is unit-tested without a cluster."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ferry.adapters.store import Revision
from ferry.domain import labels as L
from ferry.domain.entry import references

API_VERSION = "ferry.dev/v1alpha1"
#: Document order of an export: what an object refers to is applied before it, so an admission
#: webhook that checks references (schemaRef, inherits) accepts each document in turn.
KIND_ORDER = ("ConfigSchema", "ConfigEntry", "FeatureFlag")


class HistoryError(Exception):
    """Anything the CLI reports as ``error: <message>`` with exit status 1."""


class NotFound(HistoryError):
    """An object, a revision or a file that does not exist; the message names it."""


class Forbidden(HistoryError):
    """Kubernetes RBAC does not let the caller see or change the object."""


# --------------------------------------------------------------------------------- parsing


def parse_ref(text: str) -> tuple[str, str]:
    """``NS/NAME`` → (namespace, name). History is per namespaced object, so both are needed."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise HistoryError(f'"{text}" is not NAMESPACE/NAME')
    return namespace, name


_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (``2025-03-01T12:00:00Z``; no zone means UTC) or an age such as ``90m``,
    ``2h`` or ``7d`` (that long before ``now``), because both are what people type."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HistoryError(
            f'"{text}" is neither an ISO 8601 time (2025-03-01T12:00:00Z) nor an age (2h, 7d)'
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def format_time(value: dt.datetime) -> str:
    """UTC, microseconds kept: ``ferry export --at`` accepts exactly what ``history`` prints."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def short_hash(value: str) -> str:
    algorithm, _, digest = value.partition(":")
    return f"{algorithm}:{digest[:12]}" if digest else value[:12]


# --------------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by three spaces, like ``kubectl get``."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def revision_record(revision: Revision) -> dict[str, Any]:
    """One revision as ``-o json|yaml`` shows it: metadata and the resolved content."""
    return {
        "kind": revision.kind,
        "namespace": revision.namespace,
        "name": revision.name,
        "revision": revision.revision,
        "createdAt": format_time(revision.created_at),
        "changedBy": revision.changed_by,
        "reason": revision.reason,
        "hash": revision.hash,
        "uid": revision.uid,
        "content": revision.content,
    }


def history_table(revisions: Sequence[Revision]) -> str:
    return table(
        ("REVISION", "TIME", "USER", "REASON", "HASH"),
        (
            (
                r.revision,
                format_time(r.created_at),
                r.changed_by or "-",
                r.reason or "-",
                short_hash(r.hash),
            )
            for r in revisions
        ),
    )


def to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=True, allow_unicode=True, default_flow_style=False)


def render_diff(old: Any, new: Any, old_label: str, new_label: str) -> str:
    """A unified diff of two contents, each spelled as sorted YAML so that only real changes
    show (key order and JSON whitespace never do). Empty when the contents are equal."""
    lines = difflib.unified_diff(
        to_yaml(old).splitlines(),
        to_yaml(new).splitlines(),
        fromfile=old_label,
        tofile=new_label,
        lineterm="",
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------- export


def export_documents(revisions: Iterable[Revision], at: dt.datetime | None) -> list[dict[str, Any]]:
    """The manifests that recreate the state ``revisions`` describe (one per object).

    Each carries exactly the recorded spec (the input that produced the content, with Vault
    references but never secret values) and a change-reason annotation, so the revisions a
    restore creates say where they came from. Documents are ordered so references resolve:
    schemas, then entries with their bases first, then flags.
    """
    moment = format_time(at) if at is not None else "export time"
    by_kind: dict[str, list[Revision]] = {}
    for revision in revisions:
        by_kind.setdefault(revision.kind, []).append(revision)
    ordered: list[Revision] = []
    for kind in sorted(by_kind, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 9, k)):
        group = sorted(by_kind[kind], key=lambda r: (r.namespace, r.name))
        ordered += _bases_first(group) if kind == "ConfigEntry" else group
    return [
        {
            "apiVersion": API_VERSION,
            "kind": r.kind,
            "metadata": {
                "name": r.name,
                "namespace": r.namespace,
                "annotations": {
                    L.CHANGE_REASON: f"restore of revision {r.revision} (state at {moment})"
                },
            },
            "spec": r.spec,
        }
        for r in ordered
    ]


def _bases_first(entries: list[Revision]) -> list[Revision]:
    by_key = {(r.namespace, r.name): r for r in entries}
    done: set[tuple[str, str]] = set()
    out: list[Revision] = []

    def visit(key: tuple[str, str], path: tuple[tuple[str, str], ...]) -> None:
        if key in done or key in path or key not in by_key:
            return  # a cycle is the webhook's to refuse; the export keeps going
        revision = by_key[key]
        spec = revision.spec if isinstance(revision.spec, Mapping) else {}
        for base in references(spec)[1]:
            visit((key[0], base), (*path, key))
        done.add(key)
        out.append(revision)

    for key in by_key:
        visit(key, ())
    return out


def dump_documents(documents: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(
        [dict(d) for d in documents], sort_keys=False, allow_unicode=True, default_flow_style=False
    )


# --------------------------------------------------------------------------------- GitOps


@dataclass(frozen=True)
class GitOps:
    """A tool that will put its own spec back on the next sync, and how to make a fix stick."""

    tool: str  # "Argo CD", "Flux" or "Helm"
    manager: str  # the field manager (or label) that gave it away
    owner: str | None  # application, kustomization or release name when known
    advice: str


_ARGO_MANAGERS = ("argocd-controller", "argocd-application-controller", "argocd-server")
_FLUX_MANAGERS = ("kustomize-controller", "helm-controller", "flux-client-side-apply")


def detect_gitops(metadata: Mapping[str, Any]) -> GitOps | None:
    """Who else writes this object's spec, from its managedFields (and the labels and
    annotations those tools set). Only managers that own fields under ``spec`` count: a tool
    that merely labelled the object will not undo a rollback."""
    labels: Mapping[str, str] = metadata.get("labels") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    for field in metadata.get("managedFields") or []:
        manager = str(field.get("manager") or "")
        fields = field.get("fieldsV1") or {}
        if not isinstance(fields, Mapping) or "f:spec" not in fields:
            continue
        tool = _tool_for(manager)
        if tool is not None:
            return _gitops(tool, manager, labels, annotations)
    if annotations.get("argocd.argoproj.io/tracking-id"):
        return _gitops("Argo CD", "argocd.argoproj.io/tracking-id", labels, annotations)
    if labels.get("kustomize.toolkit.fluxcd.io/name") or labels.get("helm.toolkit.fluxcd.io/name"):
        return _gitops("Flux", "kustomize.toolkit.fluxcd.io labels", labels, annotations)
    if labels.get(L.MANAGED_BY) == "Helm" or annotations.get("meta.helm.sh/release-name"):
        return _gitops("Helm", f"{L.MANAGED_BY}=Helm", labels, annotations)
    return None


def _tool_for(manager: str) -> str | None:
    lowered = manager.lower()
    if lowered.startswith("argocd") or lowered in _ARGO_MANAGERS:
        return "Argo CD"
    if lowered in _FLUX_MANAGERS or lowered.startswith("flux"):
        return "Flux"
    if lowered == "helm" or lowered.startswith("helm/") or lowered.startswith("helm-"):
        return "Helm"
    return None


def _gitops(
    tool: str, manager: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> GitOps:
    if tool == "Argo CD":
        tracking = annotations.get("argocd.argoproj.io/tracking-id", "")
        owner = tracking.split(":", 1)[0] or labels.get("app.kubernetes.io/instance")
        app = owner or "APP"
        advice = (
            "Argo CD will sync this object back to the spec in Git. To keep the rollback, commit "
            "the spec below to the manifest in Git (or `git revert` the change), then sync; "
            f"to hold it meanwhile: `argocd app set {app} --sync-policy none`."
        )
    elif tool == "Flux":
        owner = labels.get("kustomize.toolkit.fluxcd.io/name") or labels.get(
            "helm.toolkit.fluxcd.io/name"
        )
        namespace = labels.get("kustomize.toolkit.fluxcd.io/namespace", "flux-system")
        name = owner or "NAME"
        advice = (
            "Flux will reconcile this object back to the spec in Git. To keep the rollback, "
            "commit the spec below to the manifest in Git (or `git revert` the change); to hold "
            f"it meanwhile: `flux suspend kustomization {name} -n {namespace}`."
        )
    else:
        owner = annotations.get("meta.helm.sh/release-name")
        release = owner or "RELEASE"
        advice = (
            "The next `helm upgrade` will write the chart's spec back. To keep the rollback, put "
            "the spec below in the chart's values and commit them, or roll the release back: "
            f"`helm rollback {release}`."
        )
    return GitOps(tool, manager, owner, advice)
