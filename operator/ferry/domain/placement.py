"""Placement: the decisions behind every object Ferry materialises in a target namespace.

A ConfigEntry becomes a ConfigMap (and, with ``secretData``, a Secret) in each accepted target
namespace; the FeatureFlags served in a namespace become its one ``ferry-flags`` ConfigMap. Each
of those is a :class:`Desired` object, and what is there now is an :class:`Observed` one. The
rules that decide between them are the same for every kind and live here, with no I/O:

* **ownership**: Ferry writes only where nothing is, or where what is there is its own; an object
  someone else made under the same name is never overwritten (:attr:`Action.REFUSE`). "Its own"
  means it carries the labels Ferry puts on it for the same source (:func:`owns`); the executor
  makes the same check against the API server itself when it writes (a create, never an
  overwrite, where nothing is known to be; a UID precondition on every update and delete), so
  an index lagging behind a ConfigMap someone just made cannot make Ferry overwrite it.
* **drift**: an object of Ferry's whose data no longer matches the hash Ferry wrote beside it was
  edited by hand; one that status says was synced and is now gone was deleted by hand. Either
  way it is written again and the correction reported.
* **wording**: what a target's status line says (:class:`TargetResult`), so that ``kubectl get
  -o yaml`` reads the same for entries and flags.

``reconcile/placement.py`` carries the decisions out; docs/decisions/0012-placement.md explains
why one abstraction serves all three kinds of object.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry.domain import labels as L


@dataclass(frozen=True)
class Desired:
    """One object Ferry wants in a target namespace, exactly as it will be applied."""

    kind: str
    """``ConfigMap`` or ``Secret``."""
    namespace: str
    name: str
    data: Mapping[str, str]
    """The object's data, as plain strings (a Secret's are base64-encoded by the adapter)."""
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    """Ferry's annotations; they include :data:`labels.RENDERED_HASH`, the hash of ``data``."""
    provenance: frozenset[str] = frozenset()
    """Annotations that say which revision last wrote the object (revision number, content
    hash). A newer revision that leaves the object's data and other annotations as they are
    does not rewrite it only to update these: a secret rotation leaves the ConfigMap alone, a
    config change leaves the Secret alone. They then name the revision the object was last
    written from, which is still true of its data."""

    @property
    def rendered_hash(self) -> str:
        return self.annotations[L.RENDERED_HASH]

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Observed:
    """What is under the desired object's name now, as far as the operator knows."""

    ours: bool
    """Made by Ferry for the same source (entry uid label, or the flag-set label)."""
    data_hash: str | None = None
    """Hash of the data it holds now (only known for Ferry's own objects)."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Ferry's annotations on it now."""
    uid: str | None = None
    """Which object it is, when known: updates and deletes are made on that very object (a
    UID precondition), never on one someone made under the same name in the meantime."""

    @property
    def edited(self) -> bool:
        """Its data no longer matches the hash Ferry wrote beside it."""
        return self.ours and self.data_hash != self.annotations.get(L.RENDERED_HASH)


FOREIGN = Observed(ours=False)


def owns(desired: Desired, labels: Mapping[str, str] | None) -> bool:
    """Whether an object labelled ``labels`` is Ferry's, for the same source as ``desired``: it
    carries every label Ferry puts on it (managed-by, and the entry's uid or the flag-set mark).

    Labels can be written by whoever may write ConfigMaps in that namespace; forging them only
    hands that person's own object over to Ferry, never anyone else's.
    """
    found = labels or {}
    return all(found.get(key) == value for key, value in desired.labels.items())


class Action(enum.Enum):
    KEEP = "keep"  # already exactly as desired
    WRITE = "write"  # create or update
    REFUSE = "refuse"  # someone else's object is there


@dataclass(frozen=True)
class Decision:
    action: Action
    drift: str | None = None
    """``"edited by hand"`` or ``"deleted by hand"`` when the write corrects drift."""


def decide(desired: Desired, observed: Observed | None, *, was_synced: bool) -> Decision:
    """What to do about one target: keep, write (perhaps correcting drift) or refuse.

    ``observed`` is ``None`` when nothing is there. ``was_synced``: status says this target had
    been written, so its absence now is someone's delete.
    """
    if observed is None:
        return Decision(Action.WRITE, "deleted by hand" if was_synced else None)
    if not observed.ours:
        return Decision(Action.REFUSE)
    up_to_date = observed.data_hash == desired.rendered_hash and all(
        k in observed.annotations if k in desired.provenance else observed.annotations.get(k) == v
        for k, v in desired.annotations.items()
    )
    if up_to_date:
        return Decision(Action.KEEP)
    return Decision(Action.WRITE, "edited by hand" if observed.edited else None)


# ----------------------------------------------------------------------------------- wording
# Reasons a target may be unsynced. A missing namespace is reported, not a failure (it may be
# created later). Namespaces that refuse are not targets at all: they are summarised in
# status.refusedTargets (ferry.domain.targets.RefusedTargets), a namespace's owner's choice
# (docs/decisions/0004).
NOT_FOUND = "NamespaceNotFound"
CONFLICT = "Conflict"
APPLY_FAILED = "ApplyFailed"
NOT_BLOCKING = (NOT_FOUND,)


@dataclass(frozen=True)
class TargetResult:
    """One line of ``status.targets``: what happened in one target namespace."""

    namespace: str
    synced: bool
    name: str | None = None
    """The object's name; left out where it is always the same (``ferry-flags``)."""
    revision: int | None = None
    reason: str | None = None
    message: str | None = None

    @property
    def blocking(self) -> bool:
        """Unsynced for a reason that makes the source not Ready."""
        return not self.synced and self.reason not in NOT_BLOCKING

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": self.namespace}
        if self.name is not None:
            out["name"] = self.name
        out["synced"] = self.synced
        if self.revision is not None:
            out["revision"] = self.revision
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        return out


def not_found(target: str, name: str | None = None) -> TargetResult:
    return TargetResult(
        target, False, name, reason=NOT_FOUND, message=f'namespace "{target}" not found'
    )


def conflict(desired: Desired, name: str | None = None) -> TargetResult:
    return TargetResult(
        desired.namespace,
        False,
        name,
        reason=CONFLICT,
        message=f'{desired.kind} "{desired.name}" in namespace "{desired.namespace}" exists and '
        "was not created by Ferry; it is left alone",
    )


def apply_failed(target: str, cause: str, name: str | None = None) -> TargetResult:
    return TargetResult(target, False, name, reason=APPLY_FAILED, message=cause)
