"""What one namespace's ``ferry-flags`` ConfigMap holds: pure planning, no I/O.

flagd keys flags by name alone, so one ConfigMap per namespace holds every flag targeted there and
two FeatureFlags with the same name (from different source namespaces) cannot both be served.
The rule that picks one (:func:`choose`) is first come, first served: the flag the ConfigMap
serves now keeps its name, as a ConfigMap someone else made keeps its name against an entry, so
no source a namespace accepts can take over a flag another source serves there (issue 11). It
depends only on the cluster as it is now (the ConfigMap's listing included), so two operator
replicas or a restart pick the same winner (docs/decisions/0006 and 0018).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.domain import labels as L
from ferry.domain.flags import SCHEMA_URI, Flag, to_flagd
from ferry.domain.hashing import canonical_json, content_hash

CONFIGMAP_NAME = "ferry-flags"
DATA_KEY = "flags.json"

_CONTENT_KEYS = ("state", "variants", "defaultVariant", "targeting")


def flag_content(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a revision of a flag records and hashes: everything that decides an answer.

    ``target`` is left out (it decides *where* a flag is served, not *what* it answers), as a
    ConfigEntry's target is left out of its content hash; defaults are filled in so that writing
    ``state: ENABLED`` explicitly is not a new revision. The result is itself a valid spec, so a
    recorded revision can be parsed and served again.
    """
    return {
        "state": spec.get("state", "ENABLED"),
        "variants": spec.get("variants"),
        "defaultVariant": spec.get("defaultVariant"),
        "targeting": spec.get("targeting") or [],
    }


def flag_hash(spec: Mapping[str, Any]) -> str:
    return content_hash(flag_content(spec))


def definition(flag: Flag) -> dict[str, Any]:
    """The flagd flag definition of ``flag``, exactly as :func:`to_flagd` writes it."""
    return dict(to_flagd({flag.key: flag})["flags"][flag.key])


@dataclass(frozen=True)
class Candidate:
    """A flag that wants to be served in a namespace, at a recorded revision.

    ``definition`` is the flagd form: rendered from the current spec for a flag whose revision is
    recorded, or the definition already served for one that is not servable now (invalid, or
    changed but not yet recorded), which keeps serving what it served before.
    """

    namespace: str
    name: str
    uid: str
    definition: Mapping[str, Any]
    revision: int
    hash: str

    @property
    def source(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class FlagSetPlan:
    """``winners``: flag key → the candidate served. ``shadowed``: (ns, name) → the winner."""

    winners: dict[str, Candidate]
    shadowed: dict[tuple[str, str], Candidate]


def is_incumbent(candidate: Candidate, listed: Mapping[str, Any] | None) -> bool:
    """Whether ``candidate`` is the flag a ``ferry-flags`` listing entry says is served: the same
    source namespace and the same object (uid), so a flag deleted and created again anew, or
    one of the same name from elsewhere, is not."""
    return (
        listed is not None
        and listed.get("namespace") == candidate.namespace
        and listed.get("uid") == candidate.uid
    )


def _precedence(
    target_namespace: str, candidate: Candidate, listed: Mapping[str, Any] | None
) -> tuple[int, int, str, str]:
    return (
        0 if is_incumbent(candidate, listed) else 1,
        0 if candidate.namespace == target_namespace else 1,
        candidate.namespace,
        candidate.uid,
    )


def choose(
    target_namespace: str,
    candidates: Iterable[Candidate],
    incumbents: Mapping[str, Mapping[str, Any]] | None = None,
) -> FlagSetPlan:
    """One candidate per flag key: the one served now, if it still wants to be (``incumbents``:
    the ConfigMap's listing, see :func:`parse_listing`); among newcomers, the namespace's own
    flag, else the first source namespace in alphabetical order. (The uid only breaks a tie the
    API server makes impossible.)"""
    incumbents = incumbents or {}
    by_key: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_key.setdefault(candidate.name, []).append(candidate)
    winners: dict[str, Candidate] = {}
    shadowed: dict[tuple[str, str], Candidate] = {}
    for key, group in by_key.items():
        listed = incumbents.get(key)
        ranked = sorted(group, key=lambda c: _precedence(target_namespace, c, listed))
        winners[key] = ranked[0]
        for loser in ranked[1:]:
            shadowed[loser.source] = ranked[0]
    return FlagSetPlan(winners, shadowed)


def render(plan: FlagSetPlan) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The flags.json document, the ConfigMap's ``data`` and the annotation listing its flags
    (an empty plan gives three empty dicts: no ConfigMap).

    The listing names each flag's source and revision, so that anyone reading the ConfigMap can
    trace a served flag back to its FeatureFlag and its history, and so that the operator knows
    which namespaces hold a flag when it is changed or deleted.
    """
    if not plan.winners:
        return {}, {}, {}
    document = {
        "$schema": SCHEMA_URI,
        "flags": {key: dict(plan.winners[key].definition) for key in sorted(plan.winners)},
    }
    data = {DATA_KEY: json.dumps(document, indent=2, ensure_ascii=False) + "\n"}
    listing = {
        key: {
            "namespace": c.namespace,
            "name": c.name,
            "uid": c.uid,
            "revision": c.revision,
            "hash": c.hash,
        }
        for key, c in sorted(plan.winners.items())
    }
    return document, data, {L.FLAGS_LISTING: canonical_json(listing)}


def parse_listing(annotations: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    """The flags a ``ferry-flags`` ConfigMap says it holds; {} if the annotation is unreadable."""
    raw = (annotations or {}).get(L.FLAGS_LISTING)
    if not raw:
        return {}
    try:
        listing = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(listing, dict):
        return {}
    return {k: v for k, v in listing.items() if isinstance(v, dict)}
