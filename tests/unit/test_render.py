"""Rendered ConfigMap data, byte for byte, as a pod would read it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from ferry.domain.errors import Invalid, Violation
from ferry.domain.render import MAX_CONFIGMAP_BYTES, check_size, render

DATA: dict[str, Any] = {
    "db": {"poolSize": 40, "host": "pg.internal"},
    "featureX": True,
    "hosts": ["a", "b"],
    "ratio": 0.5,
    "note": None,
    "greeting": "héllo",
}


def test_json() -> None:
    out = render(DATA, "json")
    assert list(out) == ["config.json"]
    assert out["config.json"] == json.dumps(DATA, indent=2, sort_keys=True, ensure_ascii=False)
    assert "héllo" in out["config.json"]
    assert json.loads(out["config.json"]) == DATA


def test_yaml() -> None:
    out = render(DATA, "yaml")
    assert list(out) == ["config.yaml"]
    assert yaml.safe_load(out["config.yaml"]) == DATA
    assert "héllo" in out["config.yaml"]
    assert out["config.yaml"].index("db:") < out["config.yaml"].index("featureX:")


def test_env() -> None:
    assert render(DATA, "env") == {
        "DB_HOST": "pg.internal",
        "DB_POOLSIZE": "40",
        "FEATUREX": "true",
        "GREETING": "héllo",
        "HOSTS_0": "a",
        "HOSTS_1": "b",
        "NOTE": "",
        "RATIO": "0.5",
    }


def test_env_special_characters_and_empty_containers() -> None:
    data = {"my-app": {"log.level": "debug"}, "off": False, "empty": {}, "none": []}
    assert render(data, "env") == {
        "MY_APP_LOG_LEVEL": "debug",
        "OFF": "false",
        "EMPTY": "{}",
        "NONE": "[]",
    }


def test_env_collision_names_both_paths() -> None:
    with pytest.raises(Invalid) as caught:
        render({"db": {"poolSize": 1}, "db_poolsize": 2}, "env")
    assert caught.value.reason == "RenderError"
    assert caught.value.violations == [
        Violation("spec.data", "env key DB_POOLSIZE produced by both db.poolSize and db_poolsize")
    ]


def test_env_every_collision_is_reported() -> None:
    with pytest.raises(Invalid) as caught:
        render({"a": {"b": 1}, "a_b": 2, "A-B": 3, "x": [1], "x_0": 2}, "env")
    messages = [v.message for v in caught.value.violations]
    assert len(messages) == 3
    assert "env key X_0 produced by both x[0] and x_0" in messages


def test_env_key_too_long_or_empty() -> None:
    with pytest.raises(Invalid) as caught:
        render({"k" * 300: 1, "": 2}, "env")
    paths = sorted(v.path for v in caught.value.violations)
    assert paths == ["spec.data." + "k" * 300, 'spec.data[""]']


def test_properties() -> None:
    out = render(DATA, "properties")
    assert list(out) == ["application.properties"]
    assert out["application.properties"].splitlines() == [
        "db.host=pg.internal",
        "db.poolSize=40",
        "featureX=true",
        "greeting=h\\u00E9llo",
        "hosts[0]=a",
        "hosts[1]=b",
        "note=",
        "ratio=0.5",
    ]
    assert out["application.properties"].endswith("\n")


def test_properties_escaping() -> None:
    data = {
        "a": {"b c": " leading and = : # ! \\ trailing "},
        "map": {"x.y": "dotted key", "tab": "1\t2\n3"},
        "emoji": "😀",
        "empty": [],
    }
    lines = render(data, "properties")["application.properties"].splitlines()
    assert lines == sorted(lines)
    assert set(lines) == {
        "a[b\\ c]=\\ leading and \\= \\: \\# \\! \\\\ trailing ",
        "emoji=\\uD83D\\uDE00",
        "empty=",
        "map.tab=1\\t2\\n3",
        "map[x.y]=dotted key",
    }


def test_files() -> None:
    data = {"nginx.conf": "worker_processes 2;\n", "settings.json": {"b": 1, "a": [1]}, "n": 3}
    assert render(data, "files") == {
        "nginx.conf": "worker_processes 2;\n",
        "settings.json": '{\n  "a": [\n    1\n  ],\n  "b": 1\n}',
        "n": "3",
    }


def test_files_invalid_keys() -> None:
    with pytest.raises(Invalid) as caught:
        render({"ok.txt": "x", "bad/name": "y", "with space": "z"}, "files")
    assert [v.path for v in caught.value.violations] == [
        'spec.data["bad/name"]',
        'spec.data["with space"]',
    ]
    assert "is not a valid ConfigMap key" in caught.value.violations[0].message


def test_unknown_format() -> None:
    with pytest.raises(Invalid) as caught:
        render({}, "toml")
    [violation] = caught.value.violations
    assert violation.path == "spec.target.format"
    assert "'toml'" in violation.message


@pytest.mark.parametrize("fmt", ["json", "yaml", "env", "properties", "files"])
def test_rendering_is_deterministic_regardless_of_key_order(fmt: str) -> None:
    shuffled = dict(reversed(list(DATA.items())))
    assert render(DATA, fmt) == render(shuffled, fmt)


def test_empty_data() -> None:
    assert render({}, "env") == {}
    assert render({}, "files") == {}
    assert render({}, "properties") == {"application.properties": ""}


# --- size -------------------------------------------------------------------------------


def test_size_at_the_limit_is_fine() -> None:
    check_size({"k": "x" * (MAX_CONFIGMAP_BYTES - 1)})


def test_size_over_the_limit() -> None:
    with pytest.raises(Invalid) as caught:
        check_size({"config.json": "é" * (MAX_CONFIGMAP_BYTES // 2)})  # 2 bytes per é
    assert caught.value.reason == "TooLarge"
    [violation] = caught.value.violations
    assert violation.path == "spec.data"
    assert str(MAX_CONFIGMAP_BYTES + len("config.json")) in violation.message
    assert str(MAX_CONFIGMAP_BYTES) in violation.message


def test_size_path_is_configurable() -> None:
    with pytest.raises(Invalid) as caught:
        check_size({"a": "x" * MAX_CONFIGMAP_BYTES}, path="spec.variants")
    assert caught.value.violations[0].path == "spec.variants"
