"""Equal configuration hashes equally however it was spelled; different config does not."""

from __future__ import annotations

import hashlib

from ferry.domain.hashing import canonical_json, content_hash


def test_canonical_json_is_sorted_compact_and_keeps_unicode() -> None:
    assert (
        canonical_json({"b": 1, "a": {"z": [1, 2], "y": "é"}}) == '{"a":{"y":"é","z":[1,2]},"b":1}'
    )


def test_key_order_does_not_change_the_hash() -> None:
    assert content_hash({"a": 1, "b": {"c": 2, "d": 3}}) == content_hash(
        {"b": {"d": 3, "c": 2}, "a": 1}
    )


def test_hash_is_prefixed_sha256_of_canonical_json() -> None:
    value = {"db": {"poolSize": 40}}
    expected = hashlib.sha256(canonical_json(value).encode()).hexdigest()
    assert content_hash(value) == f"sha256:{expected}"
    assert len(content_hash(value)) == len("sha256:") + 64


def test_different_content_different_hash() -> None:
    assert content_hash({"a": 1}) != content_hash({"a": "1"})
    assert content_hash({"a": True}) != content_hash({"a": 1})
    assert content_hash([1, 2]) != content_hash([2, 1])


def test_lone_surrogate_does_not_raise() -> None:
    assert content_hash({"k": "\ud800"}).startswith("sha256:")
