"""spec.secretData: what is accepted, which paths a namespace may name, what revisions record and
when Vault is read again."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.adapters.vault import SecretNotFound, SecretVersion
from ferry.adapters.vault_reads import PathReads
from ferry.domain.errors import Invalid
from ferry.domain.secrets import (
    HMAC_PREFIX,
    MAX_SECRET_KEYS,
    SecretRecord,
    SecretRef,
    VaultRef,
    allowed_prefixes,
    describe_secret_changes,
    env_key_collisions,
    next_refresh,
    parse_duration,
    parse_prefixes,
    parse_secret_data,
    path_allowed,
    path_violations,
    record_secret,
    records_json,
    refresh_interval,
    refresh_interval_violations,
    secret_bytes,
    secret_data_violations,
    secret_hmac,
)

KEY = b"k" * 32


def ref(path: str, key: str = "password", version: int | None = None) -> dict[str, object]:
    vault: dict[str, object] = {"path": path, "key": key}
    if version is not None:
        vault["version"] = version
    return {"vault": vault}


# --- parsing -------------------------------------------------------------------------------------


def test_parses_references_sorted_by_secret_key() -> None:
    refs = parse_secret_data(
        {"DB_PASSWORD": ref("team-a/db"), "API_KEY": ref("team-a/api", "token", 3)}
    )
    assert refs == (
        SecretRef("API_KEY", VaultRef("team-a/api", "token", 3)),
        SecretRef("DB_PASSWORD", VaultRef("team-a/db", "password", None)),
    )


@pytest.mark.parametrize("empty", [None, {}])
def test_no_secret_data_is_no_references(empty: object) -> None:
    assert parse_secret_data(empty) == ()


def test_every_violation_is_reported_with_its_json_path() -> None:
    with pytest.raises(Invalid) as caught:
        parse_secret_data(
            {
                "ok": ref("team-a/db"),
                "bad key!": ref("team-a/db"),
                "no-vault": {"aws": {}},
                "no-path": {"vault": {"key": "k"}},
                "bad-path": ref("/team-a//../db"),
                "bad-version": ref("team-a/db", version=0),
                "bool-version": {"vault": {"path": "a", "key": "k", "version": True}},
                "extra": {"vault": {"path": "a", "key": "k", "mount": "other"}},
            }
        )
    assert caught.value.reason == "InvalidSecretData"
    paths = [v.path for v in caught.value.violations]
    assert paths == sorted(
        [
            'spec.secretData["bad key!"]',
            "spec.secretData.bad-path.vault.path",
            "spec.secretData.bad-version.vault.version",
            "spec.secretData.bool-version.vault.version",
            "spec.secretData.extra.vault.mount",
            "spec.secretData.no-path.vault.path",
            "spec.secretData.no-vault.aws",
            "spec.secretData.no-vault.vault",
        ]
    )
    messages = {v.path: v.message for v in caught.value.violations}
    assert "not a valid Secret key" in messages['spec.secretData["bad key!"]']
    assert "'..'" in messages["spec.secretData.bad-path.vault.path"]
    assert "integer >= 1" in messages["spec.secretData.bad-version.vault.version"]


def test_not_an_object() -> None:
    assert [str(v) for v in secret_data_violations(["a"])] == [
        "spec.secretData: must be an object mapping Secret keys to Vault references"
    ]


def test_too_many_keys() -> None:
    data = {f"k{i}": ref("a") for i in range(MAX_SECRET_KEYS + 1)}
    assert any("at most" in v.message for v in secret_data_violations(data))


def test_env_format_needs_variable_names() -> None:
    assert parse_secret_data({"db.password": ref("a")})  # fine for a mounted Secret
    violations = secret_data_violations({"db.password": ref("a")}, env_names=True)
    assert [v.path for v in violations] == ['spec.secretData["db.password"]']
    assert "environment variable" in violations[0].message


def test_secret_keys_that_would_shadow_config_keys_under_env_from() -> None:
    refs = parse_secret_data({"DB_PASSWORD": ref("a"), "DB_HOST": ref("a")})
    assert [v.path for v in env_key_collisions(refs, {"DB_HOST", "DB_PORT"})] == [
        "spec.secretData.DB_HOST"
    ]


@given(st.text(max_size=40))
def test_checking_never_raises_anything_but_invalid(path: str) -> None:
    assert isinstance(secret_data_violations({"K": {"vault": {"path": path, "key": "k"}}}), list)


# --- allowed paths -------------------------------------------------------------------------------


def test_prefixes_are_segment_prefixes() -> None:
    assert path_allowed("team-a/db", ["team-a"])
    assert path_allowed("team-a", ["team-a"])
    assert path_allowed("team-a/x/y", ["team-a/x"])
    assert not path_allowed("team-ab/db", ["team-a"])
    assert not path_allowed("team-b/db", ["team-a"])
    assert not path_allowed("team-a/db", [])


def test_annotation_and_operator_setting_combine() -> None:
    assert parse_prefixes(" team-a/ , /shared/public,,") == ("shared/public", "team-a")
    assert allowed_prefixes("payments", "team-a/", ["tenants/{namespace}", "common"]) == (
        "common",
        "team-a",
        "tenants/payments",
    )
    assert allowed_prefixes("payments", None) == ()


def test_references_outside_the_namespace_prefixes_are_refused() -> None:
    refs = parse_secret_data({"MINE": ref("team-a/db"), "THEIRS": ref("team-b/db")})
    violations = path_violations(refs, "team-a-ns", allowed_prefixes("team-a-ns", "team-a"))
    assert [str(v) for v in violations] == [
        'spec.secretData.THEIRS.vault.path: "team-b/db" is not allowed: namespace team-a-ns may '
        'only name Vault paths under "team-a"'
    ]


def test_a_namespace_without_prefixes_may_name_nothing() -> None:
    refs = parse_secret_data({"X": ref("team-a/db")})
    (violation,) = path_violations(refs, "ns", ())
    assert "ferry.dev/vault-paths" in violation.message


@given(
    st.lists(st.from_regex(r"[a-z]{1,3}(/[a-z]{1,3}){0,2}", fullmatch=True), max_size=4),
    st.from_regex(r"[a-z]{1,3}(/[a-z]{1,3}){0,3}", fullmatch=True),
)
def test_allowed_means_below_a_prefix(prefixes: list[str], path: str) -> None:
    segments = path.split("/")
    below = any(p.split("/") == segments[: len(p.split("/"))] for p in prefixes)
    assert path_allowed(path, prefixes) == below


# --- what revisions record -----------------------------------------------------------------------


def test_hmac_is_keyed_and_bound_to_where_the_value_is_used() -> None:
    args = {"namespace": "a", "entry": "db", "name": "PASSWORD", "value": b"hunter2"}
    digest = secret_hmac(KEY, **args)  # type: ignore[arg-type]
    assert digest.startswith(HMAC_PREFIX) and len(digest) == len(HMAC_PREFIX) + 64
    assert "hunter2" not in digest
    # not a plain hash of the value: cannot be checked against guesses without the key
    assert digest[len(HMAC_PREFIX) :] != hashlib.sha256(b"hunter2").hexdigest()
    assert digest[len(HMAC_PREFIX) :] != hmac.new(KEY, b"hunter2", hashlib.sha256).hexdigest()
    assert secret_hmac(KEY, **args) == digest  # type: ignore[arg-type]
    assert secret_hmac(KEY, **{**args, "namespace": "b"}) != digest  # type: ignore[arg-type]
    assert secret_hmac(KEY, **{**args, "entry": "db2"}) != digest  # type: ignore[arg-type]
    assert secret_hmac(KEY, **{**args, "name": "OTHER"}) != digest  # type: ignore[arg-type]
    assert secret_hmac(b"j" * 32, **args) != digest  # type: ignore[arg-type]
    assert secret_hmac(KEY, **{**args, "value": b"hunter3"}) != digest  # type: ignore[arg-type]


def test_hmac_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        secret_hmac(b"short", namespace="a", entry="b", name="c", value=b"v")


def test_values_become_bytes_in_one_spelling() -> None:
    assert secret_bytes("pässword") == "pässword".encode()
    assert secret_bytes(5) == b"5"
    assert secret_bytes({"b": 1, "a": True}) == b'{"a":true,"b":1}'


def test_records_hold_reference_version_and_hmac_never_the_value() -> None:
    (secret_ref,) = parse_secret_data({"DB_PASSWORD": ref("team-a/db", "password")})
    record = record_secret(
        secret_ref, version=4, value="s3cr3t-value", key=KEY, namespace="a", entry="db"
    )
    stored = records_json([record])
    assert stored == [
        {
            "name": "DB_PASSWORD",
            "path": "team-a/db",
            "key": "password",
            "version": 4,
            "hmac": record.hmac,
        }
    ]
    assert "s3cr3t-value" not in repr(stored)
    assert SecretRecord.from_json(stored[0]) == record


def _record(name: str, version: int, value: str, path: str = "team-a/db") -> SecretRecord:
    secret_ref = SecretRef(name, VaultRef(path, "password"))
    return record_secret(
        secret_ref, version=version, value=value, key=KEY, namespace="a", entry="e"
    )


def test_history_describes_rotation_without_values() -> None:
    before = [_record("DB_PASSWORD", 3, "old-value"), _record("GONE", 1, "x")]
    after = [_record("DB_PASSWORD", 4, "new-value"), _record("NEW", 1, "y", "team-a/api")]
    lines = describe_secret_changes(before, after)
    assert lines == [
        "DB_PASSWORD: secret value changed (version 3 → 4)",
        'GONE: secret removed (was Vault "team-a/db" key "password")',
        'NEW: secret added (Vault "team-a/api" key "password", version 1)',
    ]
    assert not any(v in "".join(lines) for v in ("old-value", "new-value"))


def test_history_of_unchanged_moved_and_rewritten_values() -> None:
    same = _record("K", 3, "v")
    assert describe_secret_changes([same], [same]) == []
    assert describe_secret_changes([same], [_record("K", 4, "v")]) == [
        "K: secret version 3 → 4, value unchanged"
    ]
    moved = describe_secret_changes([same], [_record("K", 1, "w", "team-a/other")])
    assert moved == [
        'K: secret now from Vault "team-a/other" key "password" version 1 '
        '(was "team-a/db" key "password" version 3; value changed)'
    ]
    # records read back from a revision (JSON) compare like the objects
    assert describe_secret_changes(records_json([same]), [_record("K", 4, "w")]) == [
        "K: secret value changed (version 3 → 4)"
    ]


# --- refresh -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("90m", 5400), ("1h30m", 5400), ("2.5s", 2.5), ("500ms", 0.5), ("0s", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "h", "1d", "1h ", "-1h", "1hh"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_refresh_interval_default_minimum_and_violations() -> None:
    assert refresh_interval(None, minimum=60) == 3600
    assert refresh_interval("5m", minimum=60) == 300
    assert refresh_interval("10s", minimum=60) == 60  # clamped if it got past admission
    assert refresh_interval("nonsense", minimum=60) == 3600
    assert refresh_interval_violations("5m", minimum=60) == []
    assert refresh_interval_violations(None, minimum=60) == []
    (short,) = refresh_interval_violations("10s", minimum=60)
    assert str(short) == (
        "spec.refreshInterval: 10s is shorter than the minimum of 1m this operator allows "
        "(a setting)"
    )
    (bad,) = refresh_interval_violations("1d", minimum=60)
    assert bad.path == "spec.refreshInterval"


@settings(max_examples=300)
@given(
    st.uuids().map(str),
    st.floats(min_value=1, max_value=86400),
    st.floats(min_value=0, max_value=1e9),
)
def test_next_refresh_is_within_one_interval_and_on_the_entrys_grid(
    uid: str, interval: float, now: float
) -> None:
    due = next_refresh(uid, interval, now)
    assert now < due <= now + interval * (1 + 1e-9)
    following = next_refresh(uid, interval, due)
    assert following - due == pytest.approx(interval, rel=1e-6)
    # pure: same inputs, same answer (also after a restart)
    assert next_refresh(uid, interval, now) == due


def test_entries_are_spread_over_the_interval() -> None:
    interval, now = 3600.0, 1_700_000_000.0
    offsets = [next_refresh(f"uid-{i}", interval, now) - now for i in range(10_000)]
    per_minute = [0] * 60
    for offset in offsets:
        per_minute[min(59, int(offset // 60))] += 1
    # uniform would be ~167 a minute; no minute holds even twice that, none is empty
    assert max(per_minute) < 2 * 10_000 / 60
    assert min(per_minute) > 0
    per_second = {math.floor(o) for o in offsets}
    assert len(per_second) > 2500  # not bunched into a few seconds


def test_bad_interval() -> None:
    with pytest.raises(ValueError):
        next_refresh("u", 0, 0)


# --- coalescing reads (ferry.adapters.vault_reads.PathReads over an in-memory reader) -------------


class MemoryReader:
    """Stands in for Vault here only to count and time reads; tests/integration use real Vault."""

    def __init__(self, data: dict[str, dict[str, object]]) -> None:
        self.data = data
        self.calls: list[tuple[str, int | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self, path: str, version: int | None = None) -> SecretVersion:
        self.calls.append((path, version))
        await self.gate.wait()
        if path not in self.data:
            raise SecretNotFound(f'no secret at "{path}"', path=path)
        return SecretVersion(path, version or 1, "", self.data[path])


async def test_concurrent_callers_share_one_read_and_its_failure() -> None:
    reader = MemoryReader({"a": {"k": "v"}})
    reader.gate.clear()
    reads = PathReads(reader)
    waiting = [asyncio.ensure_future(reads.read("a")) for _ in range(10)]
    missing = [asyncio.ensure_future(reads.read("gone")) for _ in range(10)]
    await asyncio.sleep(0)
    reader.gate.set()
    assert {(await w).value("k") for w in waiting} == {"v"}
    for m in missing:
        with pytest.raises(SecretNotFound):
            await m
    assert reader.calls == [("a", None), ("gone", None)]
    assert reads.reads == 2
    await reads.read("a", version=2)  # another version is another read
    assert reads.reads == 3


async def test_a_cancelled_caller_does_not_cancel_the_shared_read() -> None:
    reader = MemoryReader({"a": {"k": "v"}})
    reader.gate.clear()
    reads = PathReads(reader)
    first = asyncio.ensure_future(reads.read("a"))
    second = asyncio.ensure_future(reads.read("a"))
    await asyncio.sleep(0)
    first.cancel()
    reader.gate.set()
    assert (await second).value("k") == "v"
    assert len(reader.calls) == 1


async def test_forget_and_max_age_make_the_next_read_go_to_vault() -> None:
    reader = MemoryReader({"a": {"k": "v1"}})
    now = [0.0]
    reads = PathReads(reader, max_age=60, clock=lambda: now[0])
    await reads.read("a")
    now[0] = 59
    await reads.read("a")
    assert len(reader.calls) == 1
    now[0] = 61
    reader.data["a"] = {"k": "v2"}
    assert (await reads.read("a")).value("k") == "v2"
    reads.forget("a")
    await reads.read("a")
    assert len(reader.calls) == 3


async def test_resolution_splits_values_and_failures_and_keeps_values_out_of_repr() -> None:
    reads = PathReads(MemoryReader({"a": {"k": "s3cr3t", "n": 5}}))
    refs = parse_secret_data(
        {
            "K": {"vault": {"path": "a", "key": "k"}},
            "N": {"vault": {"path": "a", "key": "n"}},
            "MISSING_KEY": {"vault": {"path": "a", "key": "x"}},
            "MISSING_PATH": {"vault": {"path": "b", "key": "k"}},
        }
    )
    resolution = await reads.resolve(refs)
    assert {k: v.value for k, v in resolution.values.items()} == {"K": b"s3cr3t", "N": b"5"}
    assert {k: e.reason for k, e in resolution.failures.items()} == {
        "MISSING_KEY": "SecretKeyNotFound",
        "MISSING_PATH": "SecretNotFound",
    }
    assert not resolution.ok
    assert "s3cr3t" not in repr(resolution)
