"""Percentage splits, bucketed exactly as flagd's ``fractional`` operator does.

The point of this module is that a user lands in the same variant whether Ferry's own evaluator or
an OpenFeature SDK reading ``flags.json`` answers, so it reproduces flagd's high-precision
bucketing (flagd PR #1909, ``core/pkg/evaluator/fractional.go``; testbed tag ``@fractional-v2``):

* the hashed key is ``flagKey + targetingKey`` with no separator (flagd's default when the
  ``fractional`` operator is given no explicit bucketing expression);
* the hash is MurmurHash3 x86 32-bit, seed 0, over the key's UTF-8 bytes, read as unsigned;
* the bucket is ``(hash * totalWeight) >> 32``, an integer in ``[0, totalWeight)``, and the variant
  is the first whose cumulative weight exceeds it.

Because the bucket depends only on the key and the total weight, and variants own contiguous ranges
starting from 0, growing the first variant of a split (25 → 50) only moves users *into* it: the
stickiness a rollout needs.

Known upcoming change: flagd's "hashing consistency" work (flagd PR #2011, testbed
``@fractional-v3``, already released in the Python ``openfeature-flagd-core`` 2.0.0) hashes a
canonical CBOR encoding of ``[flagKey, targetingKey]`` instead. flagd's Go evaluator on main and
the other providers still use the concatenation, so that is what Ferry matches; when flagd
switches, only :func:`hash_key` has to change.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

import mmh3

#: flagd refuses a fractional whose weights sum past MaxInt32 (ADR high-precision bucketing).
MAX_WEIGHT_SUM = 2_147_483_647


def hash_key(flag_key: str, targeting_key: str) -> int:
    """Unsigned MurmurHash3 x86_32 (seed 0) of ``flag_key + targeting_key`` as UTF-8.

    ``mmh3.hash`` encodes ``str`` input as UTF-8 itself, which is what flagd's Go
    ``murmur3.StringSum32`` hashes.
    """
    return mmh3.hash(flag_key + targeting_key, 0, False)


def bucket_index(hash_value: int, cumulative: Sequence[int]) -> int:
    """Index of the entry owning ``hash_value`` given cumulative weights (last = total).

    ``bisect_right`` finds the first cumulative end strictly greater than the bucket, which skips
    zero-weight entries the same way flagd's ``bucket < rangeEnd`` walk does.
    """
    return bisect_right(cumulative, (hash_value * cumulative[-1]) >> 32)


def bucket(flag_key: str, targeting_key: str, weights: Sequence[tuple[str, int]]) -> str:
    """Variant that flagd's ``fractional`` gives ``targeting_key`` for ``flag_key``.

    ``weights`` is the ordered ``(variant, weight)`` list of the split; order matters, as in flagd.
    Raises ``ValueError`` for what flagd would refuse (no weights, negative or non-integer
    weights, a total of 0 or above MaxInt32), so a caller cannot silently get an answer flagd
    would not give.
    """
    if not weights:
        raise ValueError("a split needs at least one weighted variant")
    for _, weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"weights must be non-negative integers, got {weight!r}")
    cumulative = list(accumulate(weight for _, weight in weights))
    if not 0 < cumulative[-1] <= MAX_WEIGHT_SUM:
        raise ValueError(f"sum of weights must be in 1..{MAX_WEIGHT_SUM}, got {cumulative[-1]}")
    return weights[bucket_index(hash_key(flag_key, targeting_key), cumulative)][0]
