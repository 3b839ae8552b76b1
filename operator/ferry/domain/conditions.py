"""Status conditions following the Kubernetes API conventions.

``lastTransitionTime`` must move only when ``status`` changes, so that ``kubectl wait`` and
dashboards show when something actually became ready or broke, not when it was last reconciled.
The clock is passed in: domain code has no clock, which keeps this deterministic and testable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STATUSES = ("True", "False", "Unknown")

#: The API server rejects a condition message longer than this.
MAX_MESSAGE_LENGTH = 32768


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
    ``observedGeneration`` is omitted when unknown rather than written as null.
    """
    previous = {c.get("type"): c for c in existing or [] if isinstance(c, Mapping)}
    latest: dict[str, Condition] = {}
    for condition in new:
        latest[condition.type] = condition

    merged: list[dict[str, Any]] = []
    for type_, condition in latest.items():
        old = previous.get(type_)
        kept = old.get("lastTransitionTime") if old else None
        unchanged = old is not None and old.get("status") == condition.status and kept
        merged.append(_as_dict(condition, kept if unchanged else now))
    merged.extend(
        dict(c) for c in existing or [] if isinstance(c, Mapping) and c.get("type") not in latest
    )
    return merged
