"""The HTTP evaluation endpoint and `ferry flags check-compat`: which bucketing generation they
answer with, and what they report.

The endpoint is exercised over real HTTP (aiohttp's test server) on a stand-in for the operator's
index that holds FeatureFlag snapshots; the end-to-end run against a live operator is in
tests/integration/test_flags.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from ferry.api import flags as flags_api
from ferry.cli.flags import flags as flags_cli
from ferry.cli.flags import sample_values
from ferry.domain.flags import Bucketing, compare_generations, evaluate, parse_flag
from ferry.reconcile.world import Snapshot

SPEC: dict[str, Any] = {
    "variants": {"control": "control", "a": "a", "b": "b"},
    "defaultVariant": "control",
    "targeting": [
        {
            "split": [
                {"variant": "control", "weight": 20},
                {"variant": "a", "weight": 30},
                {"variant": "b", "weight": 50},
            ]
        }
    ],
}
FLAG = parse_flag("checkout", SPEC)
# keys whose variant differs between the generations
MOVED = [
    k
    for k in (f"user-{i}" for i in range(200))
    if evaluate(FLAG, k, {}, Bucketing.FLAGD_V2).variant
    != evaluate(FLAG, k, {}, Bucketing.FLAGD_V3).variant
]


def snapshot(spec: dict[str, Any], status: dict[str, Any]) -> Snapshot:
    return Snapshot(
        uid=f"uid-{json.dumps(status, sort_keys=True)}",
        generation=1,
        resource_version="1",
        annotations={},
        finalizers=(),
        deleting=False,
        spec=spec,
        status=status,
    )


class Index:
    """The part of the operator's World the endpoint reads."""

    def __init__(self, flags: dict[tuple[str, str], Snapshot]) -> None:
        self.flags = flags

    def flag(self, namespace: str, name: str) -> Snapshot | None:
        return self.flags.get((namespace, name))


INDEX = Index(
    {
        ("apps", "checkout"): snapshot(SPEC, {"revision": 2, "bucketing": "flagd-v3"}),
        ("legacy", "checkout"): snapshot(SPEC, {"revision": 7}),
        ("pinned", "checkout"): snapshot({**SPEC, "bucketing": "flagd-v2"}, {"revision": 1}),
        ("fresh", "checkout"): snapshot(SPEC, {}),
    }
)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    flags_api.add_routes(app, INDEX, default_bucketing="flagd-v2")  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def answer(client: TestClient[web.Request, web.Application], path: str) -> Any:
    response = await client.get(path)
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("namespace", "query", "generation"),
    [
        ("apps", "", "flagd-v3"),  # recorded in status
        ("legacy", "", "flagd-v2"),  # served before generations were recorded
        ("pinned", "", "flagd-v2"),  # spec.bucketing
        ("fresh", "", "flagd-v2"),  # not reconciled yet: the operator-wide default
        ("apps", "&bucketing=flagd-v2", "flagd-v2"),  # the caller asks as a v2 provider would
        ("legacy", "&bucketing=flagd-v3", "flagd-v3"),
    ],
)
async def test_endpoint_answers_in_the_flags_generation(
    client: TestClient[web.Request, web.Application], namespace: str, query: str, generation: str
) -> None:
    assert MOVED, "the sample must contain keys the generations bucket differently"
    for key in MOVED[:10]:
        status, body = await answer(
            client, f"/v1/flags/{namespace}/checkout/evaluate?targetingKey={key}{query}"
        )
        assert status == 200
        assert body["bucketing"] == generation
        assert body["variant"] == evaluate(FLAG, key, {}, generation).variant
        assert body["reason"] == "SPLIT"


async def test_endpoint_refuses_an_unknown_generation(
    client: TestClient[web.Request, web.Application],
) -> None:
    status, body = await answer(client, "/v1/flags/apps/checkout/evaluate?bucketing=flagd-v4")
    assert status == 400
    assert "flagd-v4" in body["error"] and "flagd-v2, flagd-v3" in body["error"]


def test_endpoint_refuses_a_bad_operator_default() -> None:
    with pytest.raises(ValueError, match="default bucketing"):
        flags_api.add_routes(web.Application(), INDEX, default_bucketing="v3")  # type: ignore[arg-type]


# --- ferry flags check-compat -f FILE ---------------------------------------------------------


def manifest(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
    doc: dict[str, Any] = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "FeatureFlag",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": spec,
    }
    if status:
        doc["status"] = status
    return doc


def test_check_compat_reports_each_split(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    rollout = {
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "bucketing": "flagd-v2",
        "targeting": [
            {
                "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
                "variant": "on",
            },
            {
                "split": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
                "bucketBy": "account.id",
            },
        ],
    }
    static = {"variants": {"a": 1}, "defaultVariant": "a"}
    path.write_text(
        yaml.safe_dump_all(
            [manifest("checkout", SPEC), manifest("rollout", rollout), manifest("static", static)]
        )
    )
    result = CliRunner().invoke(
        flags_cli, ["check-compat", "-f", str(path), "--samples", "5000", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    reports = {r["flag"]: r for r in json.loads(result.output)}

    checkout = reports["checkout"]
    assert (checkout["bucketing"], checkout["bucketingSource"]) == ("flagd-v3", "operator default")
    (split,) = checkout["splits"]
    assert split["sampled"] == 5000
    assert split["weights"] == {"control": 20, "a": 30, "b": 50}
    # what the domain function counts, and close to what unrelated hashes move: 1 - Σp² = 0.62
    (direct,) = compare_generations(FLAG, sample_values(5000))
    assert split["changed"] == direct.changed
    assert abs(split["changedFraction"] - 0.62) < 0.03
    assert split["expectedFraction"] == pytest.approx(0.62)
    assert sum(m["count"] for m in split["moves"]) == split["changed"]

    rollout_report = reports["rollout"]
    assert rollout_report["bucketing"] == "flagd-v2"
    (split,) = rollout_report["splits"]
    assert (split["rule"], split["bucketBy"]) == (2, "account.id")
    assert abs(split["changedFraction"] - 0.375) < 0.03

    assert reports["static"]["splits"] == []


def test_check_compat_with_real_keys_and_text_output(tmp_path: Path) -> None:
    path = tmp_path / "flag.json"
    path.write_text(json.dumps(manifest("checkout", SPEC, {"revision": 3})))
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join([*MOVED[:7], "", MOVED[0]]) + "\n")
    result = CliRunner().invoke(
        flags_cli, ["check-compat", "-f", str(path), "--keys-file", str(keys)]
    )
    assert result.exit_code == 0, result.output
    assert "follows flagd-v2 (served before generations were recorded)" in result.output
    # seven distinct keys, every one of which moves
    assert "100.0% of 7 sampled values change variant between flagd-v2 and flagd-v3" in (
        result.output
    )


def test_check_compat_needs_exactly_one_source(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(flags_cli, ["check-compat"]).exit_code != 0
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: ConfigMap\n")
    result = runner.invoke(flags_cli, ["check-compat", "-f", str(empty)])
    assert result.exit_code != 0 and "no FeatureFlag" in result.output


def test_check_compat_names_an_invalid_flag(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest("bad", {**SPEC, "bucketing": "flagd-v9"})))
    result = CliRunner().invoke(flags_cli, ["check-compat", "-f", str(path)])
    assert result.exit_code == 1
    assert "FeatureFlag apps/bad is invalid" in result.output
    assert "spec.bucketing" in result.output


def test_sample_values_are_stable_and_distinct() -> None:
    values = sample_values(1000)
    assert values == sample_values(1000)
    assert len(set(values)) == 1000


# --- ferry flags eval: the generation it answers with (the API server read is replaced by the
# object it would return; tests/integration/test_flags.py runs it against a live cluster)


@pytest.mark.parametrize(
    ("status", "args", "generation", "source"),
    [
        ({"revision": 1, "bucketing": "flagd-v3"}, [], "flagd-v3", "status.bucketing"),
        ({"revision": 1}, [], "flagd-v2", "served before generations were recorded"),
        ({}, ["--default-bucketing", "flagd-v2"], "flagd-v2", "operator default"),
        ({"bucketing": "flagd-v3"}, ["--bucketing", "flagd-v2"], "flagd-v2", "--bucketing"),
    ],
)
def test_eval_answers_in_the_flags_generation(
    monkeypatch: pytest.MonkeyPatch,
    status: dict[str, Any],
    args: list[str],
    generation: str,
    source: str,
) -> None:
    body = manifest("checkout", SPEC, status)
    monkeypatch.setattr("ferry.cli.flags._read_flag", lambda *_: body)
    key = MOVED[0]
    runner = CliRunner()
    as_json = runner.invoke(
        flags_cli, ["eval", "apps/checkout", "--targeting-key", key, "-o", "json", *args]
    )
    assert as_json.exit_code == 0, as_json.output
    printed = json.loads(as_json.output)
    assert printed["bucketing"] == generation
    assert printed["variant"] == evaluate(FLAG, key, {}, generation).variant
    text = runner.invoke(flags_cli, ["eval", "apps/checkout", "--targeting-key", key, *args])
    assert f"bucketing: {generation} ({source})" in text.output
