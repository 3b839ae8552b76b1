"""`ferry validate`: the webhook's checks and messages, on files, directories and standard input,
with references resolved across everything given (and, for the pure part, a cluster's objects)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ferry.cli.errors import CliError, MissingFile
from ferry.cli.main import cli
from ferry.cli.manifests import read_manifests
from ferry.cli.validate import (
    Finding,
    Live,
    Manifest,
    check,
    ferry_objects,
    report,
    summary,
    validate_files,
)
from ferry.domain.admission import check_entry, check_schema_change, denial_message
from tests.support import PAYMENTS

REPO = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {"poolSize": {"type": "integer", "maximum": 100}}}


def doc(kind: str, name: str, spec: Any, namespace: str | None = "platform") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "ferry.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def write(path: Path, *docs: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(list(docs)))
    return str(path)


def manifest(kind: str, name: str, spec: Any, namespace: str = "platform") -> Manifest:
    return Manifest(kind, namespace, name, spec, f"{name}.yaml, document 1")


# ------------------------------------------------------------------------------ the webhook's word


def test_messages_are_the_webhooks_own(tmp_path: Path) -> None:
    bad_spec = {"schemaRef": {"name": "s"}, "data": {"poolSize": 500}}
    files = write(
        tmp_path / "all.yaml",
        doc("ConfigSchema", "s", {"schema": SCHEMA}),
        doc("ConfigEntry", "bad", bad_spec),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}},
    )
    schema, bad = validate_files([files])
    assert schema.valid and schema.message == "ConfigSchema platform/s is valid"
    expected = check_entry(
        "platform", "bad", bad_spec, {"bad": bad_spec}, {"s": {"schema": SCHEMA}}
    )
    assert expected  # the webhook's function finds the problem...
    assert bad.message == denial_message(
        "ConfigEntry", "platform", "bad", expected
    )  # ...and says so
    assert bad.message.startswith("ConfigEntry platform/bad is invalid: spec.data.poolSize:")
    assert bad.where == f"{files}, document 2"


def test_bases_and_schemas_come_from_every_file_given(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", doc("ConfigEntry", "base", {"data": {"poolSize": 5}}))
    child = write(
        tmp_path / "child.yaml",
        doc("ConfigEntry", "child", {"inherits": [{"name": "base"}], "data": {"x": 1}}),
    )
    [alone] = validate_files([child])
    assert not alone.valid and "base" in alone.message
    assert all(f.valid for f in validate_files([base, child]))
    # ...and from --schema files, which are read for references but not reported
    [only_child] = validate_files([child], [base])
    assert only_child.valid and only_child.name == "child"


def test_a_bare_json_schema_checks_entries_without_schema_ref(tmp_path: Path) -> None:
    bare = tmp_path / "schema.json"
    bare.write_text(json.dumps(SCHEMA))
    entries = write(tmp_path / "e.yaml", doc("ConfigEntry", "e", {"data": {"poolSize": 101}}, None))
    [finding] = validate_files([entries], [str(bare)])
    assert finding.namespace == "default"
    assert finding.message.startswith("ConfigEntry default/e is invalid: spec.data.poolSize:")
    [elsewhere] = validate_files([entries], [str(bare)], namespace="team-a")
    assert elsewhere.ref == "ConfigEntry team-a/e"


def test_flags_are_checked_too(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.yaml", doc("FeatureFlag", "f", {"variants": {}, "defaultVariant": "x"})
    )
    [finding] = validate_files([path])
    assert not finding.valid and finding.message.startswith("FeatureFlag platform/f is invalid:")


def test_unusable_input_names_the_file_or_document(tmp_path: Path) -> None:
    with pytest.raises(MissingFile, match=r"file .*nope.yaml not found"):
        validate_files([str(tmp_path / "nope.yaml")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [")
    with pytest.raises(CliError, match=r"broken\.yaml is not valid YAML"):
        validate_files([str(broken)])
    empty = write(tmp_path / "other.yaml", {"kind": "ConfigMap", "metadata": {"name": "x"}})
    with pytest.raises(CliError, match="no ConfigSchema, ConfigEntry or FeatureFlag in"):
        validate_files([empty])
    nameless = write(tmp_path / "nameless.yaml", {"kind": "ConfigEntry", "spec": {}})
    with pytest.raises(CliError, match=r"document 1 \(ConfigEntry\): metadata.name is missing"):
        validate_files([nameless])
    future = write(
        tmp_path / "v2.yaml", {**doc("ConfigEntry", "x", {}), "apiVersion": "ferry.dev/v2"}
    )
    with pytest.raises(CliError, match=r'v2\.yaml, document 1 \(ConfigEntry\): apiVersion "ferry'):
        validate_files([future])


def test_the_same_kind_name_in_another_api_group_is_not_ferrys(tmp_path: Path) -> None:
    other = {**doc("ConfigEntry", "theirs", {"whatever": 1}), "apiVersion": "example.com/v1"}
    path = write(tmp_path / "mixed.yaml", other, doc("ConfigEntry", "ours", {"data": {}}))
    assert [f.name for f in validate_files([path])] == ["ours"]


# ------------------------------------------------------------------------------ like kubectl -f


def test_a_directory_is_read_like_kubectl_apply_f(tmp_path: Path) -> None:
    write(tmp_path / "m" / "b.yaml", doc("ConfigEntry", "b", {"data": {}}))
    write(tmp_path / "m" / "a.yml", doc("ConfigEntry", "a", {"data": {}}))
    (tmp_path / "m" / "a.json").write_text(json.dumps(doc("ConfigEntry", "j", {"data": {}})))
    (tmp_path / "m" / "README.md").write_text("# not a manifest")
    write(tmp_path / "m" / "sub" / "c.yaml", doc("ConfigEntry", "c", {"data": {}}))

    flat = read_manifests([str(tmp_path / "m")])
    assert [d.body["metadata"]["name"] for d in flat] == ["j", "a", "b"]  # sorted by file name
    deep = read_manifests([str(tmp_path / "m")], recursive=True)
    assert [d.body["metadata"]["name"] for d in deep] == ["j", "a", "b", "c"]
    assert deep[-1].where == f"{tmp_path / 'm' / 'sub' / 'c.yaml'}, document 1"


def test_standard_input_multi_document_yaml_and_lists() -> None:
    text = yaml.safe_dump_all(
        [
            doc("ConfigEntry", "one", {"data": {}}),
            None,
            {"apiVersion": "v1", "kind": "List", "items": [doc("ConfigEntry", "two", {})]},
        ]
    )
    documents = read_manifests(["-"], stdin=io.StringIO(text))
    assert [d.where for d in documents] == ["stdin, document 1", "stdin, document 3, items[0]"]
    with pytest.raises(CliError, match="can be given once"):
        read_manifests(["-", "-"], stdin=io.StringIO(text))


def test_the_examples_directory_validates_and_its_invalid_example_is_named() -> None:
    examples = str(REPO / "examples")
    findings = validate_files([examples])
    assert len(findings) == 5 and all(f.valid for f in findings), [f.message for f in findings]
    deep = validate_files([examples], recursive=True)
    invalid = [f for f in deep if not f.valid]
    assert [f.ref for f in invalid] == ["ConfigEntry platform/payments-api"]
    assert "spec.data.db.poolSize: 500 is greater than the maximum of 100" in invalid[0].message
    assert "invalid/payments-api-too-big-pool.yaml, document 1" in invalid[0].where
    # the valid payments-api of 20-entries.yaml is checked on its own spec, as kubectl sends it
    assert [f.valid for f in deep if f.name == "payments-api"] == [True, False]


# ------------------------------------------------------------------------------ the pure check


def test_live_objects_fill_in_what_the_files_do_not_hold_and_files_win() -> None:
    child = manifest(
        "ConfigEntry",
        "api",
        {"schemaRef": {"name": "payments"}, "inherits": [{"name": "defaults"}], "data": {}},
    )
    [offline] = check([child])
    assert not offline.valid
    assert 'spec.inherits[0].name: ConfigEntry "defaults" not found' in offline.message

    live = Live(
        entries={"platform": {"defaults": {"data": {"db": {"poolSize": 40}}}}},
        schemas={"platform": {"payments": {"schema": PAYMENTS}}},
    )
    assert check([child], live=live)[0].valid
    # a base given in the files replaces the live one, as it will once applied
    bigger = manifest("ConfigEntry", "defaults", {"data": {"db": {"poolSize": 500}}})
    findings = check([bigger, child], live=live)
    assert [f.valid for f in findings] == [True, False]
    assert "spec.data.db.poolSize: 500 is greater than the maximum of 100" in findings[1].message
    # another namespace sees none of it
    elsewhere = Manifest("ConfigEntry", "other", "api", child.spec, "x")
    assert not check([elsewhere], live=live)[0].valid


def test_schema_changes_are_checked_against_the_stored_version_when_there_is_one() -> None:
    stricter = {
        "schema": {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}
    }
    api = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}
    live = Live(
        entries={"platform": {"api": api}},
        schemas={"platform": {"payments": {"schema": PAYMENTS}}},
    )
    change = manifest("ConfigSchema", "payments", stricter)
    assert check([change])[0].valid  # offline: as on creation
    [finding] = check([change], live=live)
    expected = check_schema_change(
        "platform", "payments", stricter, {"api": api}, {"payments": {"schema": PAYMENTS}}
    )
    assert finding.message == denial_message("ConfigSchema", "platform", "payments", expected)
    assert finding.message.startswith(
        'ConfigSchema platform/payments is invalid: spec.schema: would make ConfigEntry "api" '
    )
    relaxed = manifest("ConfigSchema", "payments", {**stricter, "compatibility": "None"})
    assert check([relaxed], live=live)[0].valid


def test_an_object_given_twice_is_checked_each_time_and_referred_to_as_last_given() -> None:
    first = Manifest("ConfigEntry", "platform", "a", {"data": {"x": 1}}, "one.yaml, document 1")
    again = Manifest("ConfigEntry", "platform", "a", {"data": "oops"}, "two.yaml, document 3")
    child = manifest("ConfigEntry", "b", {"inherits": [{"name": "a"}], "data": {}})
    findings = check([first, again, child])
    assert [f.valid for f in findings] == [True, False, False]
    assert findings[1].where == "two.yaml, document 3"
    assert "spec.data: in 'a': must be an object" in findings[2].message


def test_objects_without_namespace_take_the_default_given() -> None:
    from ferry.cli.manifests import Document

    body = doc("ConfigEntry", "e", {"data": {}}, namespace=None)
    [obj] = ferry_objects([Document(body, "stdin", 1)], "team-a")
    assert (obj.namespace, obj.where) == ("team-a", "stdin, document 1")


def test_the_report_names_every_invalid_object() -> None:
    from ferry.domain.errors import Violation

    findings = [
        Finding("ConfigEntry", "a", "good", (), "f.yaml, document 1"),
        Finding(
            "ConfigEntry", "a", "bad", (Violation("spec.data.x", "nope"),), "f.yaml, document 2"
        ),
        Finding(
            "FeatureFlag",
            "b",
            "worse",
            (Violation("spec", "must be an object"),),
            "stdin, document 1",
        ),
    ]
    data = report(findings)
    assert data["valid"] is False and data["checked"] == 3
    assert data["invalid"] == ["ConfigEntry a/bad", "FeatureFlag b/worse"]
    assert data["objects"][1] == {
        "kind": "ConfigEntry",
        "namespace": "a",
        "name": "bad",
        "source": "f.yaml, document 2",
        "valid": False,
        "message": "ConfigEntry a/bad is invalid: spec.data.x: nope",
        "violations": [{"path": "spec.data.x", "message": "nope"}],
    }
    assert summary(findings) == "2 of 3 object(s) invalid: ConfigEntry a/bad, FeatureFlag b/worse"


# ------------------------------------------------------------------------------ the command


def test_the_command_reads_a_pipe_and_exits_1_naming_every_invalid_object(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    piped = "\n---\n".join(p.read_text() for p in sorted((tmp_path / "examples").rglob("*.yaml")))
    runner = CliRunner()

    result = runner.invoke(cli, ["validate", "-f", "-"], input=piped)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "1 of 6 object(s) invalid: ConfigEntry platform/payments-api"
    )
    assert "ConfigEntry platform/payments-defaults is valid" in result.stdout

    as_json = runner.invoke(cli, ["validate", "-f", str(tmp_path / "examples"), "-o", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["valid"] is True and data["invalid"] == [] and data["checked"] == 5

    missing = runner.invoke(cli, ["validate", "-f", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert f"error: file {tmp_path / 'nope'} not found" in missing.stderr
