"""Crash safety: the operator SIGKILLed mid-convergence loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import psycopg
import pytest
import yaml

from ferry.devenv.process import StartupError
from tests.integration.conftest import Operator
from tests.support import Kube, eventually, manifest

pytestmark = pytest.mark.integration

ENTRIES = 200
TARGETS = 5


def test_sigkill_while_200_entries_converge_into_5_namespaces(
    kube: Kube, operator: Operator, database_url: str
) -> None:
    src = kube.namespace("crash")
    targets = [
        kube.namespace(f"crash-t{i}", labels={"ferry.dev/accept": "true"}) for i in range(TARGETS)
    ]
    names = [f"e{i:03d}" for i in range(ENTRIES)]

    def entries(version: int) -> list[dict]:
        return [
            manifest(
                "ConfigEntry",
                name,
                src,
                {"data": {"name": name, "version": version}, "target": {"namespaces": targets}},
            )
            for name in names
        ]

    kube.kubectl("apply", "--server-side", "-f", "-", input=_yaml(entries(1)), timeout=120)
    # Part of the way (some ConfigMaps written, most not yet), half the entries change, and the
    # operator is killed right then. (Changes while it is down are refused: the admission webhook
    # fails closed, so a single-replica operator must be up to accept configuration.)
    eventually(
        lambda: kube.get_json(
            "configmaps", "-n", targets[0], "-l", "app.kubernetes.io/managed-by=ferry"
        )["items"],
        interval=0.05,
        what="the first ConfigMaps",
    )
    kube.kubectl("apply", "--server-side", "-f", "-", input=_yaml(entries(2)[::2]), timeout=120)
    operator.kill()
    operator.start()

    def converged() -> bool:
        listed = kube.get_json("configmaps", "-A", "-l", "app.kubernetes.io/managed-by=ferry")
        seen = {
            (cm["metadata"]["namespace"], cm["metadata"]["name"]): json.loads(
                cm["data"]["config.json"]
            )["version"]
            for cm in listed["items"]
            if cm["metadata"]["namespace"] in targets
        }
        want = {(t, n): 2 if i % 2 == 0 else 1 for i, n in enumerate(names) for t in targets}
        return seen == want

    eventually(converged, timeout=240, interval=2, what="all 1000 ConfigMaps converged")

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT name, revision, content FROM revisions WHERE kind='ConfigEntry' "
            "AND namespace=%s ORDER BY name, revision",
            (src,),
        ).fetchall()
    by_name: dict[str, list[tuple[int, dict]]] = {}
    for name, revision, content in rows:
        by_name.setdefault(name, []).append((revision, content))
    assert sorted(by_name) == names
    for i, name in enumerate(names):
        history = by_name[name]
        numbers = [r for r, _ in history]
        assert numbers == list(range(1, len(numbers) + 1)), (name, numbers)
        contents = [c["version"] for _, c in history]
        assert len(contents) == len(set(contents)), (name, contents)  # no duplicate revision
        assert contents[-1] == (2 if i % 2 == 0 else 1), (name, contents)
        assert set(contents) <= {1, 2}


def _yaml(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects)


def test_sigterm_stops_the_operator_within_seconds(operator: Operator) -> None:
    """What a rolling update or a drain sends: the operator runs its clean-up and exits, well
    inside Kubernetes' 30 s grace period, instead of waiting for the SIGKILL that follows. (5 s:
    a task left pending at exit costs Kopf's own 5 s wait; a clean stop takes 1 to 2 s here.)"""
    operator.ensure_running()
    process = operator.process
    assert process is not None
    os.kill(process.pid, signal.SIGTERM)
    try:
        eventually(lambda: not process.alive(), timeout=5, interval=0.1, what="the operator gone")
        assert "Activity 'stop' succeeded" in operator.log.read_text()  # it cleaned up
    finally:
        operator.stop()  # whatever happened, nothing is left running ...
        operator.start()  # ... and the session's operator is there for the next test


def test_an_operator_that_cannot_listen_exits_naming_the_address(
    operator: Operator, kube: Kube, tmp_path: Path
) -> None:
    """A start-up that fails half-way (here: its API port taken) ends the process with the
    cause, so the kubelet restarts it and `kubectl logs` says why, instead of a process that
    never becomes ready and whose half-made start-up Kopf would run again on top of itself."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        second = Operator(
            env=operator.env, log=tmp_path / "operator.log", workdir=tmp_path, api_port=port
        )
        with pytest.raises(StartupError, match="exited before the operator") as raised:
            second.start(timeout=60)
    log = second.log.read_text()
    [failed] = [line for line in log.splitlines() if "Activity 'start' failed" in line]
    assert f"('127.0.0.1', {port}): address already in use" in failed, log[-3000:]
    assert "is the port busy" in str(raised.value)
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):  # still ours
        urls = {hook["clientConfig"]["url"] for hook in kube.get_json(kind, "ferry")["webhooks"]}
        assert {url.split("/")[2] for url in urls} == {f"127.0.0.1:{operator.webhook_port}"}
