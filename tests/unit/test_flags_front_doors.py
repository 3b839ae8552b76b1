"""`ferry flags eval` and `ferry flags check-compat`: which bucketing generation they answer
with, and what they report.

Over HTTP, flags are evaluated by `ferry serve`'s OFREP endpoints (the operator serves none):
end to end, with each flag's generation, in tests/integration/test_serve.py; the generation rule
itself (`bucketing_for`) in tests/unit/test_flags_bucketing.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ferry.cli.flags import flags as flags_cli
from ferry.cli.flags import sample_values
from ferry.domain.flags import Bucketing, compare_generations, evaluate, parse_flag

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
