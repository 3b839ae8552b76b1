"""How many users a switch between bucketing generations moves: pure, for ``ferry flags
check-compat``.

flagd's two ``fractional`` generations hash different bytes (:mod:`.bucketing`), so a split puts
a given user in an unrelated bucket after the switch. For each split of a flag this counts, over
a sample of bucketing values, how many land in a different variant under ``flagd-v2`` and
``flagd-v3``; the expectation for unrelated hashes, ``1 - Σ pᵢ²`` over the variants' shares, is
reported beside it so a team can tell a representative sample from an unlucky one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from .bucketing import Bucketing, bucket_index, check_weights, hasher
from .model import Flag


@dataclass(frozen=True)
class SplitCompat:
    """One split of a flag, compared over ``sampled`` values.

    ``moves`` counts ``(variant under flagd-v2, variant under flagd-v3)`` for the values that
    change variant; ``changed`` is their total.
    """

    rule: int
    weights: tuple[tuple[str, int], ...]
    bucket_by: str | None
    sampled: int
    changed: int
    moves: dict[tuple[str, str], int]

    @property
    def changed_fraction(self) -> float:
        return self.changed / self.sampled if self.sampled else 0.0

    @property
    def expected_fraction(self) -> float:
        """Share expected to move if the two hashes are unrelated: ``1 - Σ pᵢ²``."""
        total = sum(w for _, w in self.weights)
        return 1.0 - sum((w / total) ** 2 for _, w in self.weights)


def compare_generations(flag: Flag, values: Iterable[str]) -> list[SplitCompat]:
    """Every split of ``flag`` (in rule order), compared between flagd-v2 and flagd-v3 over
    ``values`` — targeting keys, or ``bucketBy`` attribute values for a split that has one.

    Empty values are skipped: no generation buckets them (both serve the default variant).
    """
    sample = [v for v in dict.fromkeys(values) if isinstance(v, str) and v]
    out: list[SplitCompat] = []
    for index, rule in enumerate(flag.rules):
        if rule.split is None:
            continue
        weights = tuple((e.variant, e.weight) for e in rule.split)
        cumulative = check_weights(weights)
        shorthand = rule.bucket_by is None
        old = hasher(flag.key, Bucketing.FLAGD_V2, shorthand=shorthand)
        new = hasher(flag.key, Bucketing.FLAGD_V3, shorthand=shorthand)
        moves: Counter[tuple[str, str]] = Counter()
        for value in sample:
            before = weights[bucket_index(old(value), cumulative)][0]
            after = weights[bucket_index(new(value), cumulative)][0]
            if before != after:
                moves[(before, after)] += 1
        out.append(
            SplitCompat(
                rule=index,
                weights=weights,
                bucket_by=rule.bucket_by,
                sampled=len(sample),
                changed=sum(moves.values()),
                moves=dict(sorted(moves.items())),
            )
        )
    return out
