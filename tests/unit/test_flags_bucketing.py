"""Split bucketing in both flagd generations: the hashed bytes, flagd's vectors, distribution,
stickiness, and which generation a FeatureFlag follows."""

from __future__ import annotations

from collections import Counter
from typing import Any

import cbor2
import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.domain.errors import Invalid
from ferry.domain.flags import (
    DEFAULT_BUCKETING,
    Bucketing,
    Reason,
    bucket,
    bucketing_for,
    check_flag,
    evaluate,
    explain_bucketing,
    parse_bucketing,
    parse_flag,
)
from ferry.domain.flags.bucketing import cbor_text, hash_key, hasher, key_encoder

V2, V3 = Bucketing.FLAGD_V2, Bucketing.FLAGD_V3
BOTH = [V2, V3]
CARDS = [("clubs", 25), ("diamonds", 25), ("hearts", 25), ("spades", 25)]


def test_mmh3_is_murmur3_x86_32_seed0_unsigned() -> None:
    # Reference values of MurmurHash3_x86_32 with seed 0 (SMHasher's algorithm).
    assert mmh3.hash(b"", 0, False) == 0
    assert mmh3.hash(b"hello", 0, False) == 0x248BFA47
    assert mmh3.hash(b"The quick brown fox jumps over the lazy dog", 0, False) == 0x2E4FF723
    # flagd-v2 hashes the UTF-8 of flagKey + targetingKey, as Go's murmur3.StringSum32 does.
    assert hash_key("ü", "€", V2) == mmh3.hash("ü€".encode(), 0, False)


# --- flagd-v3: the bytes are canonical CBOR, checked against cbor2 (what the Python provider,
# openfeature-flagd-core 2.x, calls: cbor2.dumps(value, canonical=True)).


@pytest.mark.parametrize("length", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_cbor_text_heads_at_every_length_boundary(length: int) -> None:
    text = "a" * length
    assert cbor_text(text) == cbor2.dumps(text, canonical=True)


@settings(max_examples=500, deadline=None)
@given(flag_key=st.text(min_size=1), value=st.text(min_size=1))
def test_v3_bytes_are_canonical_cbor(flag_key: str, value: str) -> None:
    try:
        expected_array = cbor2.dumps([flag_key, value], canonical=True)
        expected_text = cbor2.dumps(flag_key + value, canonical=True)
    except (UnicodeEncodeError, cbor2.CBOREncodeError):
        # lone surrogates: no encoder writes them; Ferry refuses them the same way
        with pytest.raises(UnicodeEncodeError):
            key_encoder(flag_key, V3)(value)
        return
    assert key_encoder(flag_key, V3)(value) == expected_array
    assert key_encoder(flag_key, V3, shorthand=False)(value) == expected_text
    assert hasher(flag_key, V3)(value) == mmh3.hash(expected_array, 0, False)
    assert key_encoder(flag_key, V2)(value) == (flag_key + value).encode()


def test_v3_shorthand_is_not_the_concatenation() -> None:
    # The array keeps the boundary between flag key and targeting key; v2 and v3 with bucketBy
    # (a cat) do not: "ab"+"c" and "a"+"bc" collide there, not in the v3 shorthand.
    assert hash_key("ab", "c", V2) == hash_key("a", "bc", V2)
    assert hash_key("ab", "c", V3, shorthand=False) == hash_key("a", "bc", V3, shorthand=False)
    assert hash_key("ab", "c", V3) != hash_key("a", "bc", V3)


# --- flagd-testbed vectors (tests/data/flagd-testbed, gherkin/targeting.feature; the whole suite
# runs in test_flagd_testbed.py, these pin the hashing itself).


# "Fractional operator hash edge cases" @fractional-v2: keys whose MurmurHash3 is exactly 0, 1,
# 2^31-1, 2^31 and 2^32-1, bucketed by {"var": "targetingKey"} (the key alone, so flag key "").
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
def test_v2_hash_edge_vectors(key: str, hash_value: int, variant: str) -> None:
    assert hash_key("", key, V2) == hash_value
    assert bucket("", key, [("lower", 50), ("upper", 50)], V2) == variant


# "Fractional operator": flag "fractional-flag" buckets {"cat": [$flagd.flagKey, user.name]},
# which is what Ferry's bucketBy renders (shorthand=False).
@pytest.mark.parametrize(
    ("generation", "name", "variant"),
    [
        (V2, "jack", "hearts"),
        (V2, "queen", "spades"),
        (V2, "ten", "clubs"),
        (V2, "nine", "diamonds"),
        (V2, "3", "clubs"),
        (V3, "jack", "diamonds"),
        (V3, "queen", "diamonds"),
        (V3, "ten", "clubs"),
        (V3, "nine", "clubs"),
        (V3, "3", "spades"),
    ],
)
def test_fractional_flag_vectors(generation: Bucketing, name: str, variant: str) -> None:
    assert bucket("fractional-flag", name, CARDS, generation, shorthand=False) == variant


# "Fractional operator with shared seed": {"cat": ["shared-seed", user.name]}.
@pytest.mark.parametrize(
    ("generation", "name", "variant"),
    [
        (V2, "seven", "hearts"),
        (V2, "eight", "diamonds"),
        (V2, "nine", "clubs"),
        (V2, "two", "spades"),
        (V3, "seven", "hearts"),
        (V3, "eight", "hearts"),
        (V3, "nine", "diamonds"),
        (V3, "two", "diamonds"),
    ],
)
def test_shared_seed_vectors(generation: Bucketing, name: str, variant: str) -> None:
    assert bucket("shared-seed", name, CARDS, generation, shorthand=False) == variant


SHORTHAND: dict[str, Any] = {
    "variants": {"heads": "heads", "tails": "tails", "draw": "draw"},
    "defaultVariant": "draw",
    # flagd's [["heads"], ["tails", 1]] (weights 1:1) in percent: the same buckets
    "targeting": [
        {"split": [{"variant": "heads", "weight": 50}, {"variant": "tails", "weight": 50}]}
    ],
}


# "Fractional operator shorthand" (v2, v3) and "... using implicit targeting key" (v3).
@pytest.mark.parametrize(
    ("generation", "targeting_key", "variant"),
    [
        (V2, "jon@company.com", "heads"),
        (V2, "jane@company.com", "tails"),
        (V3, "jon@company.com", "tails"),
        (V3, "jane@company.com", "tails"),
        (V3, "user-1", "heads"),
        (V3, "user-2", "tails"),
        (V3, "user-3", "heads"),
    ],
)
def test_shorthand_vectors_through_evaluate(
    generation: Bucketing, targeting_key: str, variant: str
) -> None:
    weights = [("heads", 1), ("tails", 1)]
    assert bucket("fractional-flag-shorthand", targeting_key, weights, generation) == variant
    flag = parse_flag("fractional-flag-shorthand", SHORTHAND)
    result = evaluate(flag, targeting_key, {}, generation)
    assert (result.variant, result.value, result.reason) == (variant, variant, Reason.SPLIT)


@pytest.mark.parametrize("generation", BOTH)
def test_no_usable_bucketing_value_serves_the_default(generation: Bucketing) -> None:
    flag = parse_flag("fractional-flag-shorthand", SHORTHAND)
    for key in (None, "", 12345, True, "\ud800"):
        result = evaluate(flag, key, {"targetingKey": "ignored"}, generation)  # type: ignore[arg-type]
        assert (result.variant, result.reason) == ("draw", Reason.DEFAULT), key


def test_unknown_generation_is_the_callers_error() -> None:
    flag = parse_flag("fractional-flag-shorthand", SHORTHAND)
    with pytest.raises(ValueError, match="flagd-v4"):
        evaluate(flag, "k", {}, "flagd-v4")
    with pytest.raises(ValueError):
        bucket("f", "k", [("a", 1)], "flagd-v4")


# --- properties that hold in both generations


@pytest.mark.parametrize("generation", BOTH)
def test_zero_weight_variant_is_never_chosen(generation: Bucketing) -> None:
    weights = [("a", 0), ("b", 100), ("c", 0)]
    assert {bucket("f", f"user-{i}", weights, generation) for i in range(2000)} == {"b"}


@pytest.mark.parametrize(
    "weights",
    [[], [("a", -1), ("b", 101)], [("a", 0)], [("a", 1.5)], [("a", 2_147_483_648)]],
)
def test_weights_flagd_refuses_are_refused(weights: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError):
        bucket("f", "k", weights, V3)


@pytest.mark.parametrize("generation", BOTH)
@pytest.mark.parametrize(
    "weights",
    [
        [("on", 25), ("off", 75)],
        [("a", 10), ("b", 20), ("c", 30), ("d", 40)],
        [("a", 1), ("b", 99)],
        [("a", 50), ("b", 50)],
    ],
)
def test_distribution_within_one_point_over_100k_keys(
    generation: Bucketing, weights: list[tuple[str, int]]
) -> None:
    n = 100_000
    counts = Counter(bucket("new-checkout", f"user-{i}", weights, generation) for i in range(n))
    total = sum(w for _, w in weights)
    for variant, weight in weights:
        share = 100 * counts[variant] / n
        assert abs(share - 100 * weight / total) <= 1.0, (variant, share)


@pytest.mark.parametrize("generation", BOTH)
@pytest.mark.parametrize(("before", "after"), [(25, 50), (1, 2), (10, 90), (0, 100)])
def test_growing_a_split_moves_nobody_out_of_the_growing_variant(
    generation: Bucketing, before: int, after: int
) -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    small = {
        k: bucket("new-checkout", k, [("on", before), ("off", 100 - before)], generation)
        for k in keys
    }
    large = {
        k: bucket("new-checkout", k, [("on", after), ("off", 100 - after)], generation)
        for k in keys
    }
    assert all(large[k] == "on" for k in keys if small[k] == "on")
    # and only those who were "off" can have moved, all of them into "on"
    assert all(small[k] == "off" for k in keys if small[k] != large[k])


def _rollout(on: int, **rule: Any) -> Any:
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
                    **rule,
                }
            ],
        },
    )


@pytest.mark.parametrize("generation", BOTH)
def test_growing_a_split_through_parsed_flags_is_sticky(generation: Bucketing) -> None:
    f25, f50 = _rollout(25), _rollout(50)
    ctx = {"region": "eu-west-1"}
    keys = [f"u{i}" for i in range(20_000)]
    on25 = {k for k in keys if evaluate(f25, k, ctx, generation).variant == "on"}
    on50 = {k for k in keys if evaluate(f50, k, ctx, generation).variant == "on"}
    assert on25 <= on50
    assert 0.23 < len(on25) / 20_000 < 0.27 and 0.48 < len(on50) / 20_000 < 0.52


def test_generations_bucket_independently() -> None:
    # Switching generation re-buckets like a fresh split: for 50/50, about half the users move.
    flag = _rollout(50)
    ctx = {"region": "eu-west-1"}
    keys = [f"user-{i}" for i in range(20_000)]
    moved = sum(
        evaluate(flag, k, ctx, V2).variant != evaluate(flag, k, ctx, V3).variant for k in keys
    )
    assert 0.48 < moved / len(keys) < 0.52


@pytest.mark.parametrize("generation", BOTH)
def test_bucket_depends_on_flag_key(generation: Bucketing) -> None:
    weights = [("a", 50), ("b", 50)]
    keys = [f"user-{i}" for i in range(1000)]
    one = [bucket("flag-one", k, weights, generation) for k in keys]
    two = [bucket("flag-two", k, weights, generation) for k in keys]
    assert one != two


@pytest.mark.parametrize("generation", BOTH)
def test_evaluate_buckets_exactly_like_bucket(generation: Bucketing) -> None:
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
        assert evaluate(flag, key, {}, generation).variant == bucket(
            "checkout", key, weights, generation
        )


# --- bucketBy: an attribute's string value instead of the targeting key


@pytest.mark.parametrize("generation", BOTH)
def test_bucket_by_attribute(generation: Bucketing) -> None:
    flag = _rollout(50, bucketBy="account.id")
    weights = [("on", 50), ("off", 50)]
    for i in range(2000):
        account = f"acct-{i}"
        ctx = {"region": "eu-west-1", "account": {"id": account}}
        want = bucket("new-checkout", account, weights, generation, shorthand=False)
        # every user of an account gets the account's variant, whatever their targeting key
        assert evaluate(flag, f"user-{i}", ctx, generation).variant == want
        assert evaluate(flag, None, ctx, generation) == evaluate(flag, "x", ctx, generation)
        assert evaluate(flag, "x", ctx, generation).reason == Reason.SPLIT


@pytest.mark.parametrize("generation", BOTH)
@pytest.mark.parametrize("value", [None, "", 42, 4.5, True, ["a"], {"id": "a"}])
def test_bucket_by_needs_a_non_empty_string(generation: Bucketing, value: Any) -> None:
    flag = _rollout(50, bucketBy="account")
    ctx: dict[str, Any] = {"region": "eu-west-1"}
    if value is not None:
        ctx["account"] = value
    result = evaluate(flag, "user-1", ctx, generation)
    assert (result.variant, result.reason) == ("off", Reason.DEFAULT)


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ({"variant": "on", "bucketBy": "account"}, "spec.targeting[0].bucketBy", "split"),
        ({"bucketBy": "targetingKey"}, "spec.targeting[0].bucketBy", "targeting key"),
        ({"bucketBy": "$flagd.flagKey"}, "spec.targeting[0].bucketBy", "reserved"),
        ({"bucketBy": "a..b"}, "spec.targeting[0].bucketBy", "empty segment"),
        ({"bucketBy": 7}, "spec.targeting[0].bucketBy", "non-empty string"),
    ],
)
def test_bad_bucket_by_is_refused(rule: dict[str, Any], path: str, message: str) -> None:
    split = {"split": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}
    full = {**split, **rule} if "variant" not in rule else rule
    violations = check_flag(
        {"variants": {"on": 1, "off": 0}, "defaultVariant": "off", "targeting": [full]}
    )
    assert [v.path for v in violations] == [path]
    assert message in violations[0].message


# --- which generation a flag follows


@pytest.mark.parametrize(
    ("spec", "status", "default", "expected", "source"),
    [
        ({}, {}, "flagd-v3", V3, "operator default"),
        ({}, {}, "flagd-v2", V2, "operator default"),
        ({}, None, "flagd-v3", V3, "operator default"),
        # recorded at creation, kept when the operator-wide default changes
        ({}, {"bucketing": "flagd-v3", "revision": 4}, "flagd-v2", V3, "status.bucketing"),
        ({}, {"bucketing": "flagd-v2", "revision": 4}, "flagd-v3", V2, "status.bucketing"),
        # the owner's choice wins over both
        ({"bucketing": "flagd-v3"}, {"bucketing": "flagd-v2"}, "flagd-v2", V3, "spec.bucketing"),
        ({"bucketing": "flagd-v2"}, {}, "flagd-v3", V2, "spec.bucketing"),
        # served by a Ferry that matched flagd-v2 before generations were recorded
        ({}, {"revision": 3}, "flagd-v3", V2, "served before generations were recorded"),
        # an invalid spec value (the flag is Invalid anyway) does not move what is recorded
        ({"bucketing": "v9"}, {"bucketing": "flagd-v2"}, "flagd-v3", V2, "status.bucketing"),
        ({}, {"bucketing": "garbage"}, "flagd-v3", V3, "operator default"),
    ],
)
def test_bucketing_for(
    spec: dict[str, Any],
    status: dict[str, Any] | None,
    default: str,
    expected: Bucketing,
    source: str,
) -> None:
    assert bucketing_for(spec, status, default) == expected
    assert explain_bucketing(spec, status, default) == (expected, source)


def test_default_follows_flagds_current_specification() -> None:
    assert DEFAULT_BUCKETING == "flagd-v3"


def test_bad_default_is_an_error_not_a_silent_choice() -> None:
    with pytest.raises(ValueError, match="default bucketing: 'v3'"):
        bucketing_for({}, {}, "v3")
    with pytest.raises(ValueError, match="FERRY_FLAGS_DEFAULT_BUCKETING: 'flagd'"):
        parse_bucketing("flagd", "FERRY_FLAGS_DEFAULT_BUCKETING")
    assert parse_bucketing("flagd-v2") is V2


@pytest.mark.parametrize("value", ["flagd-v1", "v3", "", None, 3])
def test_spec_bucketing_is_validated(value: Any) -> None:
    spec = {"variants": {"a": 1}, "defaultVariant": "a", "bucketing": value}
    with pytest.raises(Invalid) as caught:
        parse_flag("f", spec)
    assert [v.path for v in caught.value.violations] == ["spec.bucketing"]
    assert "flagd-v2, flagd-v3" in caught.value.violations[0].message


def test_spec_bucketing_is_accepted() -> None:
    for value in ("flagd-v2", "flagd-v3"):
        assert check_flag({"variants": {"a": 1}, "defaultVariant": "a", "bucketing": value}) == []
