"""`ferry validate --cluster` on the real API server: bases and schemas that live only in the
cluster resolve, schema changes are checked against the stored version, and the cluster is read
as the caller (their kubeconfig, `--as`). Every message is compared with what `kubectl apply`
is told by the admission webhook for the same object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Operator
from tests.support import PAYMENTS, Kube, entry, schema

pytestmark = pytest.mark.integration


def ferry(kube: Kube, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "ferry", "validate", *args],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def api(ns: str, pool_size: int) -> dict[str, Any]:
    return entry(
        "api",
        ns,
        {
            "schemaRef": {"name": "payments"},
            "inherits": [{"name": "defaults"}],
            "data": {"db": {"poolSize": pool_size}},
        },
    )


@pytest.fixture
def ns(kube: Kube, operator: Operator) -> str:
    """A namespace holding the schema and the base entry, as a platform team would keep them."""
    name = kube.namespace("val")
    kube.apply(
        schema("payments", name, PAYMENTS),
        entry(
            "defaults",
            name,
            {"schemaRef": {"name": "payments"}, "data": {"db": {"host": "db", "poolSize": 40}}},
        ),
    )
    return name


def test_bases_and_schemas_in_the_cluster_resolve(kube: Kube, ns: str, tmp_path: Path) -> None:
    child = tmp_path / "api.yaml"
    child.write_text(yaml.safe_dump(api(ns, 50)))

    offline = ferry(kube, "-f", str(child))
    assert offline.returncode == 1
    assert 'spec.inherits[0].name: ConfigEntry "defaults" not found' in offline.stdout
    assert offline.stderr.splitlines()[-1] == f"1 of 1 object(s) invalid: ConfigEntry {ns}/api"

    online = ferry(kube, "-f", str(child), "--cluster")
    assert online.returncode == 0, online.stderr
    assert online.stdout == f"ConfigEntry {ns}/api is valid\n"


def test_an_invalid_object_from_a_pipe_gets_the_webhooks_message(kube: Kube, ns: str) -> None:
    bad = api(ns, 500)
    piped = yaml.safe_dump_all([{"apiVersion": "v1", "kind": "ConfigMap"}, bad])

    result = ferry(kube, "-f", "-", "--cluster", input=piped)
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith(f"ConfigEntry {ns}/api is invalid: spec.data.db.poolSize: 500 is")
    denied = kube.apply(bad, check=False)
    assert denied.returncode != 0
    assert line in denied.stderr  # the very message kubectl shows

    as_json = ferry(kube, "-f", "-", "--cluster", "-o", "json", input=piped)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["invalid"] == [f"ConfigEntry {ns}/api"]
    assert report["objects"][0]["source"] == "stdin, document 2"
    assert report["objects"][0]["message"] == line


def test_schema_changes_are_checked_against_the_stored_version(
    kube: Kube, ns: str, tmp_path: Path
) -> None:
    body = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}
    stricter = schema("payments", ns, body)
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(stricter))

    assert ferry(kube, "-f", str(path)).returncode == 0  # offline: as if it were new
    result = ferry(kube, "-f", str(path), "--cluster")
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith(
        f'ConfigSchema {ns}/payments is invalid: spec.schema: would make ConfigEntry "defaults" '
    )
    denied = kube.apply(stricter, check=False)
    assert denied.returncode != 0
    assert line in denied.stderr


def test_the_cluster_is_read_as_the_caller(kube: Kube, ns: str, tmp_path: Path) -> None:
    child = tmp_path / "api.yaml"
    child.write_text(yaml.safe_dump(api(ns, 50)))
    result = ferry(kube, "-f", str(child), "--cluster", "--as", "mallory")
    assert result.returncode == 1
    assert result.stderr.startswith(f'error: forbidden: configentries in namespace "{ns}"')
    assert result.stdout == ""
