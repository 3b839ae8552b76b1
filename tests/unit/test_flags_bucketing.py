"""Split bucketing: flagd's vectors, distribution and stickiness."""

from __future__ import annotations

from collections import Counter

import mmh3
import pytest

from ferry.domain.flags import Reason, bucket, evaluate, parse_flag
from ferry.domain.flags.bucketing import hash_key

CARDS = [("clubs", 25), ("diamonds", 25), ("hearts", 25), ("spades", 25)]


def test_mmh3_is_murmur3_x86_32_seed0_unsigned() -> None:
    # Reference values of MurmurHash3_x86_32 with seed 0 (SMHasher's algorithm).
    assert mmh3.hash(b"", 0, False) == 0
    assert mmh3.hash(b"hello", 0, False) == 0x248BFA47
    assert mmh3.hash(b"The quick brown fox jumps over the lazy dog", 0, False) == 0x2E4FF723
    # str input is hashed as UTF-8, as Go's murmur3.StringSum32 does.
    assert hash_key("ü", "€") == mmh3.hash("ü€".encode(), 0, False)


# flagd-testbed gherkin/targeting.feature, "Fractional operator hash edge cases" (@fractional-v2):
# keys whose MurmurHash3-x86-32 (seed 0) is exactly 0, 1, 2^31-1, 2^31 and 2^32-1, bucketed over
# flags/custom-ops.json "fractional-hash-edge-flag" = [["lower", 50], ["upper", 50]].
@pytest.mark.parametrize(
    ("key", "hash_value", "variant"),
    [
        ("ejOoVL", 0, "lower"),
        ("bY9fO-", 1, "lower"),
        ("SI7p-", 2147483647, "lower"),
        ("6LvT0", 2147483648, "upper"),
        ("ceQdGm", 4294967295, "upper"),
    ],
)
def test_flagd_testbed_hash_edge_vectors(key: str, hash_value: int, variant: str) -> None:
    assert hash_key("", key) == hash_value
    assert bucket("", key, [("lower", 50), ("upper", 50)]) == variant


# flagd-testbed gherkin/targeting.feature, "Fractional operator" examples @fractional-v2, flag
# "fractional-flag" in flags/custom-ops.json: bucketing {"cat": [$flagd.flagKey, user.name]} —
# i.e. flagKey + name, the same key Ferry hashes — over clubs/diamonds/hearts/spades 25 each.
@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("jack", "hearts"),
        ("queen", "spades"),
        ("ten", "clubs"),
        ("nine", "diamonds"),
        ("3", "clubs"),
    ],
)
def test_flagd_testbed_fractional_flag_vectors(name: str, variant: str) -> None:
    assert bucket("fractional-flag", name, CARDS) == variant


# Same feature, "Fractional operator with shared seed" @fractional-v2: {"cat": ["shared-seed",
# user.name]} — a constant prefix in place of the flag key.
@pytest.mark.parametrize(
    ("name", "variant"),
    [("seven", "hearts"), ("eight", "diamonds"), ("nine", "clubs"), ("two", "spades")],
)
def test_flagd_testbed_shared_seed_vectors(name: str, variant: str) -> None:
    assert bucket("shared-seed", name, CARDS) == variant


# Same feature, "Fractional operator shorthand" @fractional-v2: flag "fractional-flag-shorthand"
# is {"fractional": [["heads"], ["tails", 1]]} (weight defaults to 1) with no bucketing
# expression, so flagd hashes flagKey + targetingKey: exactly Ferry's split.
@pytest.mark.parametrize(
    ("targeting_key", "variant"),
    [("jon@company.com", "heads"), ("jane@company.com", "tails")],
)
def test_flagd_testbed_shorthand_vectors_through_evaluate(targeting_key: str, variant: str) -> None:
    assert bucket("fractional-flag-shorthand", targeting_key, [("heads", 1), ("tails", 1)]) == (
        variant
    )
    # The same split as a Ferry flag (weights scaled to percent keep the same buckets: 50/50).
    flag = parse_flag(
        "fractional-flag-shorthand",
        {
            "variants": {"heads": "heads", "tails": "tails", "draw": "draw"},
            "defaultVariant": "draw",
            "targeting": [
                {"split": [{"variant": "heads", "weight": 50}, {"variant": "tails", "weight": 50}]}
            ],
        },
    )
    result = evaluate(flag, targeting_key, {})
    assert (result.variant, result.value, result.reason) == (variant, variant, Reason.SPLIT)


def test_zero_weight_variant_is_never_chosen() -> None:
    weights = [("a", 0), ("b", 100), ("c", 0)]
    assert {bucket("f", f"user-{i}", weights) for i in range(2000)} == {"b"}


@pytest.mark.parametrize(
    "weights",
    [[], [("a", -1), ("b", 101)], [("a", 0)], [("a", 1.5)], [("a", 2_147_483_648)]],
)
def test_weights_flagd_refuses_are_refused(weights: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError):
        bucket("f", "k", weights)


@pytest.mark.parametrize(
    "weights",
    [
        [("on", 25), ("off", 75)],
        [("a", 10), ("b", 20), ("c", 30), ("d", 40)],
        [("a", 1), ("b", 99)],
        [("a", 50), ("b", 50)],
    ],
)
def test_distribution_within_one_point_over_100k_keys(weights: list[tuple[str, int]]) -> None:
    n = 100_000
    counts = Counter(bucket("new-checkout", f"user-{i}", weights) for i in range(n))
    total = sum(w for _, w in weights)
    for variant, weight in weights:
        share = 100 * counts[variant] / n
        assert abs(share - 100 * weight / total) <= 1.0, (variant, share)


@pytest.mark.parametrize(("before", "after"), [(25, 50), (1, 2), (10, 90), (0, 100)])
def test_growing_a_split_moves_nobody_out_of_the_growing_variant(before: int, after: int) -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    small = {k: bucket("new-checkout", k, [("on", before), ("off", 100 - before)]) for k in keys}
    large = {k: bucket("new-checkout", k, [("on", after), ("off", 100 - after)]) for k in keys}
    assert all(large[k] == "on" for k in keys if small[k] == "on")
    # and only those who were "off" can have moved, all of them into "on"
    assert all(small[k] == "off" for k in keys if small[k] != large[k])


def test_growing_a_split_through_parsed_flags_is_sticky() -> None:
    def flag(on: int):
        return parse_flag(
            "new-checkout",
            {
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": [
                    {
                        "when": [{"attribute": "region", "op": "in", "values": ["eu-west-1"]}],
                        "split": [
                            {"variant": "on", "weight": on},
                            {"variant": "off", "weight": 100 - on},
                        ],
                    }
                ],
            },
        )

    f25, f50 = flag(25), flag(50)
    ctx = {"region": "eu-west-1"}
    on25 = {k for k in (f"u{i}" for i in range(20_000)) if evaluate(f25, k, ctx).variant == "on"}
    on50 = {k for k in (f"u{i}" for i in range(20_000)) if evaluate(f50, k, ctx).variant == "on"}
    assert on25 <= on50
    assert 0.23 < len(on25) / 20_000 < 0.27 and 0.48 < len(on50) / 20_000 < 0.52


def test_bucket_depends_on_flag_key() -> None:
    weights = [("a", 50), ("b", 50)]
    keys = [f"user-{i}" for i in range(1000)]
    one = [bucket("flag-one", k, weights) for k in keys]
    two = [bucket("flag-two", k, weights) for k in keys]
    assert one != two


def test_evaluate_buckets_exactly_like_bucket() -> None:
    weights = [("a", 10), ("b", 0), ("c", 60), ("d", 30)]
    flag = parse_flag(
        "checkout",
        {
            "variants": {v: v for v, _ in weights},
            "defaultVariant": "a",
            "targeting": [{"split": [{"variant": v, "weight": w} for v, w in weights]}],
        },
    )
    for i in range(5000):
        key = f"user-{i}-ü"
        assert evaluate(flag, key, {}).variant == bucket("checkout", key, weights)
