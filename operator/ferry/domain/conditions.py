"""Status conditions following the Kubernetes API conventions.

``lastTransitionTime`` must move only when ``status`` changes, so that ``kubectl wait`` and
dashboards show when something actually became ready or broke, not when it was last reconciled.
The clock is passed in: domain code has no clock, which keeps this deterministic and testable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.domain.placement import TargetResult

STATUSES = ("True", "False", "Unknown")

#: The API server rejects a condition message longer than this.
MAX_MESSAGE_LENGTH = 32768

#: kstatus' conditions of "abnormal-true" polarity: present only while True, so their absence
#: means all is well (kstatus' README; Flux deletes them the same way). :func:`merge_conditions`
#: writes one that is False by leaving it out: every condition costs the API server ≈ 0.35 ms of
#: CPU on each status write (decision 0032).
ABNORMAL_TRUE = frozenset({"Reconciling", "Stalled"})


@dataclass(frozen=True)
class Condition:
    """One observation: ``type`` is ``status`` because of ``reason`` (CamelCase)."""

    type: str
    status: str
    reason: str
    message: str = ""
    observed_generation: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"condition status must be one of {STATUSES}, not {self.status!r}")


def _as_dict(condition: Condition, last_transition_time: str) -> dict[str, Any]:
    message = condition.message
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 1] + "…"
    out: dict[str, Any] = {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": message,
        "lastTransitionTime": last_transition_time,
    }
    if condition.observed_generation is not None:
        out["observedGeneration"] = condition.observed_generation
    return out


def merge_conditions(
    existing: Iterable[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    now: str,
) -> list[dict[str, Any]]:
    """The conditions to write: ``new`` (in its order) then untouched ``existing`` ones.

    A condition keeps its old ``lastTransitionTime`` when its status is unchanged; otherwise the
    time is ``now``. If ``new`` repeats a type, the last one wins (at the first one's position).
    ``observedGeneration`` is omitted when unknown rather than written as null. A ``new``
    condition of :data:`ABNORMAL_TRUE` type that is False is written as no condition of its type.
    """
    previous = {c.get("type"): c for c in existing or [] if isinstance(c, Mapping)}
    latest: dict[str, Condition] = {}
    for condition in new:
        latest[condition.type] = condition

    merged: list[dict[str, Any]] = []
    for type_, condition in latest.items():
        if type_ in ABNORMAL_TRUE and condition.status == "False":
            continue
        old = previous.get(type_)
        kept = old.get("lastTransitionTime") if old else None
        unchanged = old is not None and old.get("status") == condition.status and kept
        merged.append(_as_dict(condition, str(kept) if unchanged else now))
    merged.extend(
        dict(c) for c in existing or [] if isinstance(c, Mapping) and c.get("type") not in latest
    )
    return merged


def progress(
    *,
    generation: int,
    reconciling: tuple[str, str] | None = None,
    stalled: tuple[str, str] | None = None,
) -> list[Condition]:
    """kstatus' two "abnormal-true" conditions, which Flux, kpt and Argo CD read.

    ``Reconciling=True`` (reason, message): Ferry is still working and will retry by itself
    (PostgreSQL down). ``Stalled=True``: Ferry cannot make progress without a human (invalid
    content, a foreign object in the way, a write the API server refuses): GitOps tools fail
    with the reason at once instead of waiting out their timeout. Otherwise each is False here,
    which :func:`merge_conditions` writes as its absence, so a fixed problem visibly clears.
    """
    out = []
    for type_, cause in (("Reconciling", reconciling), ("Stalled", stalled)):
        if cause is None:
            out.append(Condition(type_, "False", "AsExpected", "", generation))
        else:
            out.append(Condition(type_, "True", cause[0], cause[1], generation))
    return out


def sync_conditions(
    targets: list[TargetResult],
    revision: int,
    generation: int,
    cache_error: str | None,
    *,
    valid: str,
    cached: str,
    placed: str,
) -> list[Condition]:
    """The conditions after a successful record: Valid, Recorded, Synced, Cached and Ready.

    ``valid``, ``cached`` and ``placed`` word the messages for the kind ("content is valid" /
    "flag is valid", ...).
    """
    failed = [t for t in targets if t.blocking]
    skipped = [t for t in targets if not t.synced and not t.blocking]
    synced = [t for t in targets if t.synced]
    detail = "".join(f"; {t.namespace}: {t.reason}" for t in (*failed, *skipped))
    ok = not failed
    stalled = (
        (str(failed[0].reason), f"{failed[0].namespace}: {failed[0].message}") if failed else None
    )
    return [
        Condition("Valid", "True", "Valid", valid, generation),
        Condition("Recorded", "True", "Recorded", f"revision {revision}", generation),
        Condition(
            "Synced",
            "True" if ok else "False",
            "Synced" if ok else str(failed[0].reason),
            f"{len(synced)} target(s) synced, {len(failed)} failed, {len(skipped)} skipped"
            + detail,
            generation,
        ),
        Condition(
            "Cached",
            "False" if cache_error else "True",
            "CacheUnavailable" if cache_error else "Cached",
            cache_error or cached,
            generation,
        ),
        Condition(
            "Ready",
            "True" if ok else "False",
            "Synced" if ok else "TargetsNotSynced",
            f"revision {revision} {placed} in {len(synced)} namespace(s)"
            if ok
            else f"{len(failed)} target(s) failed" + detail,
            generation,
        ),
        *progress(stalled=stalled, generation=generation),
    ]
