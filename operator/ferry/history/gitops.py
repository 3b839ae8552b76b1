"""Who else writes an object's spec (Argo CD, Flux, Helm), so a rollback can warn that the next
sync will undo it and say how to make it stick. Pure: reads metadata only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.domain import labels as L


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
