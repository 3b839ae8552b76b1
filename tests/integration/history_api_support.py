"""The history API (``ferry history-api``) registered with the test API server, for the tests
that read history through it (test_history.py, test_history_api.py).

Module-scoped: each module registers it, and unregisters it at its end (also after a failure).
The server runs as Ferry's own identity would in a pod; here the admin kubeconfig stands in for
its service account (``system:auth-delegator`` + the authentication ConfigMap reader).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ferry.adapters.postgres import migrate
from ferry.devenv.historyapi import HistoryApi, start_history_api
from tests.support import Kube


@pytest.fixture(scope="module", name="history_api")
def history_api_fixture(
    kube: Kube, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HistoryApi]:
    migrate(database_url)  # as the operator does at start; a no-op when it already ran
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "FERRY_DATABASE_URL": database_url}
    server = start_history_api(
        tmp_path_factory.mktemp("history-api"),
        kubectl=kube.kubectl_path,
        kubeconfig=kube.kubeconfig,
        env=env,
    )
    try:
        yield server
    finally:
        server.stop()
