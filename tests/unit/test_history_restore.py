"""What `ferry restore` writes into an existing object (a JSON patch, never server-side apply),
and how `ferry export -f` writes its file (readable by its owner only). The restore itself, on a
real API server, is in tests/integration/test_history.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ferry.cli.errors import CliError
from ferry.cli.history import write_private
from ferry.history.service import restore_patch

REASON = "ferry.dev/change-reason"


def live(spec: Any, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "e", "namespace": "ns", "resourceVersion": "41", **meta},
        "spec": spec,
    }


def doc(spec: Any, **meta: Any) -> dict[str, Any]:
    return {
        "kind": "ConfigEntry",
        "metadata": {"name": "e", "namespace": "ns", **meta},
        "spec": spec,
    }


GUARD = {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}


def test_the_spec_is_replaced_whole_so_fields_added_since_are_gone() -> None:
    now = live({"data": {"a": 1, "b": 2}, "schemaRef": {"name": "s"}}, annotations={"x": "y"})
    exported = doc({"data": {"a": 1, "n": None}}, annotations={REASON: "restore of revision 1"})

    assert restore_patch(now, exported) == [
        GUARD,
        {"op": "replace", "path": "/spec", "value": {"data": {"a": 1, "n": None}}},
        {"op": "add", "path": "/metadata/annotations/ferry.dev~1change-reason",
         "value": "restore of revision 1"},
    ]  # fmt: skip


def test_labels_and_annotations_are_set_over_the_live_ones_never_removed() -> None:
    now = live({"data": {}}, labels={"team": "a", "argocd.argoproj.io/instance": "app"})
    exported = doc({"data": {"a": 1}}, labels={"team": "b"}, annotations={REASON: "r"})

    assert restore_patch(now, exported) == [
        GUARD,
        {"op": "replace", "path": "/spec", "value": {"data": {"a": 1}}},
        {"op": "add", "path": "/metadata/labels/team", "value": "b"},
        {"op": "add", "path": "/metadata/annotations", "value": {REASON: "r"}},
    ]


def test_nothing_is_written_when_the_object_already_has_the_exported_spec() -> None:
    now = live({"data": {"a": 1}}, annotations={REASON: "someone's edit"})
    assert restore_patch(now, doc({"data": {"a": 1}}, annotations={REASON: "restore"})) is None
    # ...but a label the document sets is, without touching the spec or the reason.
    assert restore_patch(now, doc({"data": {"a": 1}}, labels={"k": "v"})) == [
        GUARD,
        {"op": "add", "path": "/metadata/labels", "value": {"k": "v"}},
    ]


def test_an_export_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "export.yaml"
    old = os.umask(0)  # the widest umask: the mode must not depend on it
    try:
        assert write_private(str(path), "kind: ConfigEntry\n") is None
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "kind: ConfigEntry\n"


def test_an_existing_wider_file_is_tightened_then_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "export.yaml"
    path.write_text("stale\n" * 100)
    path.chmod(0o644)

    assert write_private(str(path), "new\n") == 0o644
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "new\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_file_of_another_user_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "export.yaml"
    path.write_text("theirs\n")
    path.chmod(0o666)
    os.chown(path, 65534, 65534)

    with pytest.raises(CliError, match=r"belongs to another user \(uid 65534\)"):
        write_private(str(path), "secret\n")
    assert path.read_text() == "theirs\n"
    assert path.stat().st_mode & 0o777 == 0o666


def test_a_directory_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=f"cannot write {tmp_path}: Is a directory"):
        write_private(str(tmp_path), "x")
