"""ferry.client without a server: the event-stream parser and the last-known-good file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ferry.client import EventParser, FerryClient, FerryUnavailable
from ferry.devenv.process import free_port


def _events(
    text: str, last_id: str | None = None
) -> tuple[list[tuple[str, str, str | None]], EventParser]:
    parser = EventParser(last_id)
    found = []
    for line in text.split("\n"):
        event = parser.feed(line)
        if event is not None:
            found.append((event.event, event.data, event.id))
    return found, parser


def test_events_are_parsed_as_the_html_standard_says() -> None:
    stream = (
        "retry: 1000\n"
        "\n"
        ": heartbeat\n"
        "\n"
        "id: e.1-0\n"
        "event: ready\n"
        'data: {"namespace":"a"}\n'
        "\n"
        "data:first\n"
        "data:  second\n"
        "\n"
        "id: e.2-0\n"
        "event: updated\n"
        "\n"
        "id\n"
        "data: x\n"
        "\n"
    )
    found, parser = _events(stream)
    assert found == [
        ("ready", '{"namespace":"a"}', "e.1-0"),
        ("message", "first\n second", "e.1-0"),  # one leading space dropped, not two
        # "updated" had no data: not dispatched, but its id counts; a bare "id" resets it
        ("message", "x", ""),
    ]
    assert parser.retry_ms == 1000 and parser.comments == 1
    # an id with NUL is ignored
    found, _ = _events("id: a\0b\ndata: y\n\n", last_id="kept")
    assert found == [("message", "y", "kept")]


def test_the_last_known_good_copy_is_served_when_the_api_is_unreachable(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = FerryClient(dead, namespace="shop", token="t", cache_dir=tmp_path, timeout=1)
    with pytest.raises(FerryUnavailable, match="cannot reach"):
        client.get("api")

    document = {
        "namespace": "shop",
        "name": "api",
        "revision": 3,
        "hash": "sha256:ab",
        "format": "json",
        "data": {"a": 1},
        "rendered": {"config.json": '{"a":1}'},
    }
    client._save("shop", "api", document, '"sha256:ab:json"')
    saved = tmp_path / "shop" / "api.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600  # configuration is not for every user
    config = client.get("api")
    assert config.stale and config.revision == 3 and config.data == {"a": 1}
    assert config.etag == '"sha256:ab:json"'

    # names that are not file names stay inside the cache directory
    client._save("shop", "../../escape", document, None)
    assert not (tmp_path.parent / "escape.json").exists()
    assert json.loads((tmp_path / "shop" / "..%2F..%2Fescape.json").read_text())["etag"] is None


def test_evaluate_never_raises_it_returns_the_default_with_the_error(tmp_path: Path) -> None:
    client = FerryClient(f"http://127.0.0.1:{free_port()}", namespace="shop", token="t", timeout=1)
    answer = client.evaluate("new-checkout", {"targetingKey": "u"}, default=False)
    assert answer.value is False and answer.reason == "ERROR" and answer.error_code == "GENERAL"
