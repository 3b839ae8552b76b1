"""Percentage splits, bucketed exactly as flagd's ``fractional`` operator does — in either of the
two generations of it that OpenFeature providers run today (docs/decisions/0014).

Both generations hash with MurmurHash3 x86 32-bit, seed 0, read as unsigned, and map the hash to a
bucket ``(hash * totalWeight) >> 32`` in ``[0, totalWeight)``; the variant is the first whose
cumulative weight exceeds the bucket (flagd's high-precision bucketing, testbed ``@fractional-v2``
and ``@fractional-v3``). They differ in the bytes that are hashed:

* ``flagd-v2`` (flagd's Go core up to v0.16.x, the providers that embed it, Python's
  ``openfeature-flagd-core`` 1.x): the UTF-8 of ``flagKey + targetingKey``, no separator; with a
  bucketing expression, the UTF-8 of the string it evaluates to.
* ``flagd-v3`` (flagd's current specification, ADR "fractional-non-string-rand-units"; Python's
  ``openfeature-flagd-core`` 2.x, Java): the canonical CBOR (RFC 8949 §4.2.1) of the bucketing
  value — for the shorthand without an expression, the two-element array ``[flagKey,
  targetingKey]``; with an expression, the value it evaluates to (a string here: see ``bucketBy``).

Ferry hashes only text strings (a targeting key, or a ``bucketBy`` attribute that is a string), so
the CBOR it needs is a text-string head plus the UTF-8 bytes and, for the shorthand, an array
head: :func:`cbor_text` writes that head (RFC 8949 §3.1, preferred serialisation = shortest
length argument). The general encoders (``cbor2.dumps(..., canonical=True)``, as the Python
provider calls it) cost ~2.3 µs per key, ten times the rest of an evaluation; the unit tests check
these bytes equal cbor2's canonical encoding for arbitrary Unicode keys.

Because the bucket depends only on the hashed bytes and the total weight, and variants own
contiguous ranges starting from 0, growing the first variant of a split (25 → 50) only moves users
*into* it, in both generations: the stickiness a rollout needs. Switching generations, on the
other hand, re-buckets about as many users as a fresh random split would (``ferry flags
check-compat`` measures it per flag).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from itertools import accumulate
from typing import Any

import mmh3

#: flagd refuses a fractional whose weights sum past MaxInt32 (ADR high-precision bucketing).
MAX_WEIGHT_SUM = 2_147_483_647


class Bucketing(StrEnum):
    """Which generation of flagd's ``fractional`` a flag's splits follow (``spec.bucketing``)."""

    FLAGD_V2 = "flagd-v2"
    FLAGD_V3 = "flagd-v3"


#: What a flag follows when neither its spec nor its status says: flagd's current specification.
DEFAULT_BUCKETING = Bucketing.FLAGD_V3
#: What every flag served before ``status.bucketing`` existed was evaluated with.
LEGACY_BUCKETING = Bucketing.FLAGD_V2
GENERATIONS = frozenset(b.value for b in Bucketing)


def parse_bucketing(value: Any, where: str = "bucketing") -> Bucketing:
    """``value`` as a :class:`Bucketing`, or ``ValueError`` naming ``where`` and the choices.

    For settings (the operator-wide default) and command-line options; a FeatureFlag's
    ``spec.bucketing`` is checked with the rest of its spec by ``check_flag``.
    """
    if isinstance(value, str) and value in GENERATIONS:
        return Bucketing(value)
    raise ValueError(f"{where}: {value!r} is not one of {', '.join(sorted(GENERATIONS))}")


def explain_bucketing(
    spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None, default: str
) -> tuple[Bucketing, str]:
    """:func:`bucketing_for` and where its answer came from, for people reading the CLI."""
    explicit = (spec or {}).get("bucketing")
    if isinstance(explicit, str) and explicit in GENERATIONS:
        return Bucketing(explicit), "spec.bucketing"
    status = status or {}
    recorded = status.get("bucketing")
    if isinstance(recorded, str) and recorded in GENERATIONS:
        return Bucketing(recorded), "status.bucketing"
    if status.get("revision") is not None:
        return LEGACY_BUCKETING, "served before generations were recorded"
    return parse_bucketing(default, "default bucketing"), "operator default"


def bucketing_for(
    spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None, default: str
) -> Bucketing:
    """The generation a FeatureFlag follows now, which is also what its ``status.bucketing`` says.

    1. ``spec.bucketing`` when set (a valid value): the owner chose.
    2. else ``status.bucketing`` when recorded: the generation the flag was created with stays
       until someone sets ``spec.bucketing``, so changing the operator-wide default never
       re-buckets a live flag's users behind its owner's back.
    3. else, a flag that was served before Ferry recorded generations (its status has a
       ``revision`` but no ``bucketing``) was evaluated as ``flagd-v2``: it keeps that.
    4. else (a new flag) ``default``, the operator-wide setting (``ValueError`` if that is not a
       generation: a configuration mistake must not pick one silently).

    Pure: the reconciler writes the result to ``status.bucketing``; the CLI and the read API call
    it on the live object to choose how to answer.
    """
    return explain_bucketing(spec, status, default)[0]


# --- the hashed bytes ------------------------------------------------------------------------

_SMALL_TEXT_HEADS = tuple(bytes((0x60 | n,)) for n in range(24))


def _text_head(n: int) -> bytes:
    """Head of a CBOR text string of ``n`` UTF-8 bytes (major type 3, shortest argument)."""
    if n < 24:
        return _SMALL_TEXT_HEADS[n]
    if n < 0x100:
        return b"\x78" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\x79" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x7a" + n.to_bytes(4, "big")
    return b"\x7b" + n.to_bytes(8, "big")


def cbor_text(text: str) -> bytes:
    """``text`` as a CBOR text string (major type 3) in preferred serialisation.

    Raises ``UnicodeEncodeError`` for a string that is not valid Unicode (a lone surrogate),
    which no CBOR encoder can write either.
    """
    data = text.encode("utf-8")
    return _text_head(len(data)) + data


_ARRAY_OF_TWO = b"\x82"

Encoder = Callable[[str], bytes]
Hasher = Callable[[str], int]


def key_encoder(flag_key: str, bucketing: str, *, shorthand: bool = True) -> Encoder:
    """For one flag, the function from a bucketing value to the bytes flagd's ``fractional``
    hashes under ``bucketing`` (the one definition of those bytes in Ferry).

    ``shorthand``: the value is the targeting key and the split has no bucketing expression.
    Otherwise the value is a ``bucketBy`` attribute's string, rendered as ``{"cat":
    [{"var": "$flagd.flagKey"}, {"var": attribute}]}``, so the hashed string is ``flag_key +
    value`` in both generations: as UTF-8 in v2, as a CBOR text string in v3. Whatever depends
    only on the flag key (the array head and first item of the shorthand) is encoded once here.
    """
    if bucketing == Bucketing.FLAGD_V2:
        return lambda value: (flag_key + value).encode("utf-8")
    if bucketing != Bucketing.FLAGD_V3:
        raise ValueError(f"unknown bucketing {bucketing!r}")
    if shorthand:
        prefix = _ARRAY_OF_TWO + cbor_text(flag_key)
        small = _SMALL_TEXT_HEADS

        def shorthand_bytes(value: str) -> bytes:
            # cbor_text inlined for the common short key: this runs once per split evaluation
            data = value.encode("utf-8")
            n = len(data)
            return prefix + (small[n] if n < 24 else _text_head(n)) + data

        return shorthand_bytes
    return lambda value: cbor_text(flag_key + value)


def hasher(flag_key: str, bucketing: str, *, shorthand: bool = True) -> Hasher:
    """Unsigned MurmurHash3 x86_32 (seed 0) of :func:`key_encoder`'s bytes, for one flag."""
    encode = key_encoder(flag_key, bucketing, shorthand=shorthand)
    murmur = mmh3.hash
    return lambda value: murmur(encode(value), 0, False)


def hash_key(flag_key: str, value: str, bucketing: str, *, shorthand: bool = True) -> int:
    """:func:`hasher` for a single value."""
    return hasher(flag_key, bucketing, shorthand=shorthand)(value)


def bucket_index(hash_value: int, cumulative: Sequence[int]) -> int:
    """Index of the entry owning ``hash_value`` given cumulative weights (last = total).

    ``bisect_right`` finds the first cumulative end strictly greater than the bucket, which skips
    zero-weight entries the same way flagd's ``bucket < rangeEnd`` walk does.
    """
    return bisect_right(cumulative, (hash_value * cumulative[-1]) >> 32)


def check_weights(weights: Sequence[tuple[str, int]]) -> list[int]:
    """Cumulative weights, or ``ValueError`` for what flagd refuses or cannot bucket (no
    weights, negative or non-integer weights, a total of 0 or above MaxInt32)."""
    if not weights:
        raise ValueError("a split needs at least one weighted variant")
    for _, weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"weights must be non-negative integers, got {weight!r}")
    cumulative = list(accumulate(weight for _, weight in weights))
    if not 0 < cumulative[-1] <= MAX_WEIGHT_SUM:
        raise ValueError(f"sum of weights must be in 1..{MAX_WEIGHT_SUM}, got {cumulative[-1]}")
    return cumulative


def bucket(
    flag_key: str,
    targeting_key: str,
    weights: Sequence[tuple[str, int]],
    bucketing: str = DEFAULT_BUCKETING,
    *,
    shorthand: bool = True,
) -> str:
    """Variant that flagd's ``fractional`` gives ``targeting_key`` for ``flag_key``.

    ``weights`` is the ordered ``(variant, weight)`` list of the split; order matters, as in
    flagd. Raises ``ValueError`` as :func:`check_weights` does, so a caller cannot silently get
    an answer flagd would not give.
    """
    cumulative = check_weights(weights)
    h = hash_key(flag_key, targeting_key, bucketing, shorthand=shorthand)
    return weights[bucket_index(h, cumulative)][0]
