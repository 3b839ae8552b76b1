"""`ferry validate`: the webhook's checks and messages, offline, on files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.domain.admission import check_entry, denial_message
from ferry.history.offline import validate_file
from ferry.history.present import HistoryError, NotFound

SCHEMA = {"type": "object", "properties": {"poolSize": {"type": "integer", "maximum": 100}}}


def doc(kind: str, name: str, spec: Any, namespace: str | None = "platform") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "ferry.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def write(path: Path, *docs: Any) -> str:
    path.write_text(yaml.safe_dump_all(list(docs)))
    return str(path)


def test_messages_are_the_webhooks_own(tmp_path: Path) -> None:
    bad_spec = {"schemaRef": {"name": "s"}, "data": {"poolSize": 500}}
    files = write(
        tmp_path / "all.yaml",
        doc("ConfigSchema", "s", {"schema": SCHEMA}),
        doc("ConfigEntry", "bad", bad_spec),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}},
    )
    schema, bad = validate_file([files])
    assert schema.valid and schema.message == "ConfigSchema platform/s is valid"
    expected = check_entry(
        "platform", "bad", bad_spec, {"bad": bad_spec}, {"s": {"schema": SCHEMA}}
    )
    assert expected  # the webhook's function finds the problem...
    assert bad.message == denial_message(
        "ConfigEntry", "platform", "bad", expected
    )  # ...and says so
    assert bad.message.startswith("ConfigEntry platform/bad is invalid: spec.data.poolSize:")


def test_bases_and_schemas_come_from_every_file_given(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", doc("ConfigEntry", "base", {"data": {"poolSize": 5}}))
    child = write(
        tmp_path / "child.yaml",
        doc("ConfigEntry", "child", {"inherits": [{"name": "base"}], "data": {"x": 1}}),
    )
    [alone] = validate_file([child])
    assert not alone.valid and "base" in alone.message
    assert all(f.valid for f in validate_file([base, child]))


def test_a_bare_json_schema_checks_entries_without_schema_ref(tmp_path: Path) -> None:
    bare = tmp_path / "schema.json"
    bare.write_text(json.dumps(SCHEMA))
    entries = write(tmp_path / "e.yaml", doc("ConfigEntry", "e", {"data": {"poolSize": 101}}, None))
    [finding] = validate_file([entries], [str(bare)])
    assert finding.namespace == "default"
    assert finding.message.startswith("ConfigEntry default/e is invalid: spec.data.poolSize:")


def test_flags_are_checked_too(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.yaml", doc("FeatureFlag", "f", {"variants": {}, "defaultVariant": "x"})
    )
    [finding] = validate_file([path])
    assert not finding.valid and finding.message.startswith("FeatureFlag platform/f is invalid:")


def test_unusable_input_names_the_file_or_document(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"file .*nope.yaml not found"):
        validate_file([str(tmp_path / "nope.yaml")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [")
    with pytest.raises(HistoryError, match=r"broken\.yaml is not valid YAML"):
        validate_file([str(broken)])
    empty = write(tmp_path / "other.yaml", {"kind": "ConfigMap", "metadata": {"name": "x"}})
    with pytest.raises(HistoryError, match="no ConfigSchema, ConfigEntry or FeatureFlag in"):
        validate_file([empty])
    nameless = write(tmp_path / "nameless.yaml", {"kind": "ConfigEntry", "spec": {}})
    with pytest.raises(HistoryError, match=r"document 1 \(ConfigEntry\): metadata.name is missing"):
        validate_file([nameless])
