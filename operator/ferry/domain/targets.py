"""Which namespaces a ConfigEntry writes into, and which of them let it.

Writing configuration into another team's namespace is a privilege, so the target namespace must
opt in. The rules here are the whole policy; adapters only list namespaces and apply the plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.domain import labels as L

Namespace = tuple[str, Mapping[str, str] | None, Mapping[str, str] | None]


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = str(expression.get("key"))
    operator = expression.get("operator")
    values = expression.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False  # an operator we do not understand selects nothing: never over-select


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Kubernetes ``LabelSelector`` semantics: all ``matchLabels`` and all ``matchExpressions``.

    As in Kubernetes, ``{}`` selects everything and an absent selector (``None``) selects nothing;
    ``NotIn`` matches objects that lack the label.
    """
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        _expression_matches(expression, labels)
        for expression in selector.get("matchExpressions") or []
    )


def accepts(
    source_namespace: str,
    target_namespace: str,
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
) -> bool:
    """Whether ``target_namespace`` lets entries from ``source_namespace`` write into it.

    A namespace always accepts its own entries. Otherwise it needs the label
    ``ferry.dev/accept: "true"`` (accept from anyone) or the annotation
    ``ferry.dev/accept-from: ns1, ns2`` naming the source. ``*`` in the annotation is not a
    wildcard: the label already says "anyone" explicitly, and a wildcard hidden in a list of
    names is easy to add by accident and hard to spot in review.
    """
    if source_namespace == target_namespace:
        return True
    if (labels or {}).get(L.ACCEPT) == "true":
        return True
    allowed = (annotations or {}).get(L.ACCEPT_FROM) or ""
    return source_namespace in {name.strip() for name in allowed.split(",")}


@dataclass(frozen=True)
class TargetPlan:
    """Desired namespaces split by what happens to them; each tuple sorted.

    ``accepted``: write there. ``refused``: wanted but not opted in (reported, never written).
    ``missing``: named explicitly but does not exist (reported; it may be created later).
    """

    accepted: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def targets_elsewhere(target_spec: Mapping[str, Any] | None) -> bool:
    """Whether an entry's ``spec.target`` names namespaces besides its own (``namespaces`` or a
    ``namespaceSelector``): only then do other namespaces' labels concern it."""
    target = target_spec or {}
    return bool(target.get("namespaces")) or target.get("namespaceSelector") is not None


def desired_namespaces(
    own_namespace: str,
    target_spec: Mapping[str, Any] | None,
    namespaces: Iterable[Namespace],
) -> TargetPlan:
    """Plan where an entry in ``own_namespace`` goes, given every namespace in the cluster.

    The wanted set is ``target.namespaces`` plus every namespace matched by
    ``target.namespaceSelector``. A target with neither (or no target at all) means the entry's
    own namespace only, which always exists and always accepts.
    """
    if not targets_elsewhere(target_spec):
        return TargetPlan(accepted=(own_namespace,))
    target = target_spec or {}
    explicit = target.get("namespaces") or []
    selector = target.get("namespaceSelector")

    known = {name: (labels or {}, annotations or {}) for name, labels, annotations in namespaces}
    known.setdefault(own_namespace, ({}, {}))
    wanted = {name for name, (labels, _) in known.items() if selector_matches(selector, labels)}
    missing = {name for name in explicit if name not in known}
    wanted |= {name for name in explicit if name in known}

    accepted: list[str] = []
    refused: list[str] = []
    for name in wanted:
        labels, annotations = known[name]
        (accepted if accepts(own_namespace, name, labels, annotations) else refused).append(name)
    return TargetPlan(
        accepted=tuple(sorted(accepted)),
        refused=tuple(sorted(refused)),
        missing=tuple(sorted(missing)),
    )


def object_name(entry_name: str, target_spec: Mapping[str, Any] | None) -> str:
    """Name of the generated ConfigMap/Secret: ``target.name``, defaulting to the entry's name."""
    name = (target_spec or {}).get("name")
    return name if isinstance(name, str) and name else entry_name


# ----------------------------------------------------------------------------- refused targets
#: Refused namespaces named in status; the rest are counted. A ``namespaceSelector: {}`` in a
#: cluster of thousands of namespaces must not make one status (or one Event each) per refusal.
MAX_REFUSED_LISTED = 10


@dataclass(frozen=True)
class RefusedTargets:
    """The namespaces that refuse a source, as status shows them (``status.refusedTargets``):
    how many, the first few by name, and a digest of the whole set, which is how a change of the
    set is told from a resync or a restart without keeping the whole list anywhere."""

    count: int = 0
    first: tuple[str, ...] = ()
    digest: str = ""

    def as_status(self) -> dict[str, Any]:
        return {"count": self.count, "first": list(self.first), "digest": self.digest}

    def describe(self, source_namespace: str, what: str = "entries") -> str:
        """One line for an Event or a condition: 'namespaces "a", "b" and 8 more do not accept
        entries from "src"'."""
        named = ", ".join(f'"{n}"' for n in self.first)
        more = f" and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        noun = "namespace" if self.count == 1 else "namespaces"
        verb = "does" if self.count == 1 else "do"
        return f'{noun} {named}{more} {verb} not accept {what} from "{source_namespace}"'


def summarise_refused(refused: Iterable[str], limit: int = MAX_REFUSED_LISTED) -> RefusedTargets:
    """The summary of ``refused`` (any order): count, the first ``limit`` names sorted, digest."""
    names = sorted(set(refused))
    if not names:
        return RefusedTargets()
    digest = "sha256:" + hashlib.sha256("\n".join(names).encode()).hexdigest()
    return RefusedTargets(len(names), tuple(names[:limit]), digest)


def refused_changed(previous: Mapping[str, Any] | None, now: RefusedTargets) -> bool:
    """Whether the refused set differs from the one status recorded (``previous``: the status's
    ``refusedTargets``, or None). Events and audit rows for refusals are written only then, so
    a resync or an operator restart says nothing new; "none then, none now" is no change."""
    before = str((previous or {}).get("digest") or "")
    return before != now.digest
