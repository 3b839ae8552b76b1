"""The history API against a hostile or careless tenant (security review of decision 0021):
pages bounded in rows, bytes and time, input answered as the Kubernetes API would (400, 404,
never 500 or a false "store unavailable"), and every selector requirement ANDed.

Through the real API server's aggregation layer (``kubectl get --raw`` as the cluster admin),
against a real PostgreSQL. Rows are written straight into PostgreSQL: the history API only
reads them, and thousands of revisions through the operator would take minutes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest

from ferry.adapters.postgres import migrate
from ferry.adapters.postgres.history import HistoryReader, RevisionQuery
from ferry.adapters.postgres.pool import QueryRejected, StatementTimeout
from ferry.devenv.historyapi import HistoryApi
from tests.integration.history_api_support import history_api_fixture  # noqa: F401
from tests.support import Kube

pytestmark = pytest.mark.integration

API = "/apis/history.ferry.dev/v1alpha1"
MIB = 1024 * 1024
#: The server's byte cap of a page (``historyapi.server.PAGE_BYTES``), as a user sees it.
PAGE_BYTES = 4 * MIB


def insert_revisions(
    database_url: str,
    ns: str,
    name: str,
    count: int,
    *,
    kind: str = "ConfigEntry",
    blob_bytes: int = 0,
) -> None:
    """Revisions 1..count of one object, each with ``blob_bytes`` of content."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO revisions (kind, uid, namespace, name, revision, content, spec, hash)"
            " SELECT %(kind)s, 'uid-' || %(name)s, %(ns)s, %(name)s, n,"
            "   jsonb_build_object('n', n, 'blob', repeat('x', %(size)s)), '{}'::jsonb,"
            "   'sha256:' || n"
            " FROM generate_series(1, %(count)s) n",
            {"kind": kind, "name": name, "ns": ns, "size": blob_bytes, "count": count},
        )


def insert_audit(database_url: str, ns: str, count: int, *, blob_bytes: int = 0) -> None:
    """``count`` audit rows, one second apart (row n at second n), ``blob_bytes`` of details."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_log (at, action, kind, namespace, name, revision, details)"
            " SELECT timestamptz '2026-01-01T00:00:00Z' + n * interval '1 second', 'updated',"
            "   'ConfigEntry', %(ns)s, 'e' || n, n,"
            "   jsonb_build_object('reason', repeat('x', %(size)s))"
            " FROM generate_series(1, %(count)s) n",
            {"ns": ns, "size": blob_bytes, "count": count},
        )


def raw(kube: Kube, path: str, **query: str) -> subprocess.CompletedProcess[str]:
    """A GET through the API server, as the admin."""
    url = f"{API}/{path}" + (f"?{urlencode(query)}" if query else "")
    return kube.kubectl("get", "--raw", url, check=False, timeout=60)


def ok(kube: Kube, path: str, **query: str) -> tuple[dict[str, Any], int]:
    """The decoded body and its size in bytes."""
    out = raw(kube, path, **query)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), len(out.stdout.encode())


def refused(kube: Kube, path: str, **query: str) -> str:
    out = raw(kube, path, **query)
    assert out.returncode != 0, out.stdout[:300]
    return out.stderr


def every_page(kube: Kube, path: str, **query: str) -> Iterator[tuple[dict[str, Any], int]]:
    """Each page of a list, following ``continue`` as kubectl and client-go do."""
    while True:
        body, size = ok(kube, path, **query)
        yield body, size
        token = body["metadata"].get("continue")
        if not token:
            return
        query = {**query, "continue": token}


def names(body: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in body["items"]]


@pytest.fixture(scope="module")
def schema(database_url: str) -> str:
    migrate(database_url)  # as the operator does at start; a no-op when it already ran
    return database_url


@pytest.fixture(scope="module")
def tenant(kube: Kube, history_api: HistoryApi) -> str:
    return kube.namespace("hostile")


def _log_mentions(history_api: HistoryApi, text: str) -> bool:
    return text in history_api.log.read_text(errors="replace")


# ------------------------------------------------------------------------------ pages


def test_a_list_without_limit_comes_in_pages_that_kubectl_and_the_cli_follow(
    kube: Kube, tenant: str, database_url: str
) -> None:
    insert_revisions(database_url, tenant, "many", 1001)

    pages = list(every_page(kube, f"namespaces/{tenant}/configrevisions"))
    assert [len(body["items"]) for body, _ in pages] == [1000, 1]
    listed = [name for body, _ in pages for name in names(body)]
    assert listed == [f"configentry.many.{n}" for n in range(1, 1002)]

    out = kube.kubectl("get", "configrevisions", "-n", tenant, "-o", "name")
    assert len(out.stdout.split()) == 1001

    # The ferry CLI (lightkube) follows the token too: all 1001 revisions, in order.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_DATABASE")}
    env["KUBECONFIG"] = str(kube.kubeconfig)
    history = subprocess.run(
        [sys.executable, "-m", "ferry", "history", f"{tenant}/many", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert history.returncode == 0, history.stderr
    assert [r["revision"] for r in json.loads(history.stdout)] == list(range(1, 1002))


def test_a_page_of_large_revisions_stops_at_a_few_mebibytes_with_a_continue_token(
    kube: Kube, tenant: str, database_url: str
) -> None:
    insert_revisions(database_url, tenant, "big", 10, blob_bytes=MIB)
    path = f"namespaces/{tenant}/configrevisions"
    selector = {"fieldSelector": "spec.entry=big"}

    pages = list(every_page(kube, path, limit="500", **selector))
    assert len(pages) > 1
    for _, size in pages:
        assert size < PAGE_BYTES + 2 * MIB, size  # the cap, passed by one revision at most
    listed = [name for body, _ in pages for name in names(body)]
    assert listed == [f"configentry.big.{n}" for n in range(1, 11)]  # none repeated, none lost
    assert len(list(every_page(kube, path, **selector))) > 1  # without limit, the same


def test_audit_events_keep_the_newest_limit_and_page_them_by_bytes(
    kube: Kube, database_url: str, history_api: HistoryApi
) -> None:
    ns = kube.namespace("audit")
    insert_audit(database_url, ns, 12, blob_bytes=MIB)
    path = f"namespaces/{ns}/auditevents"

    pages = list(every_page(kube, path, limit="10"))
    assert len(pages) > 1
    for _, size in pages:
        assert size < PAGE_BYTES + 2 * MIB, size
    # The newest 10 of the 12, oldest first, across the pages.
    entries = [item["spec"]["entry"] for body, _ in pages for item in body["items"]]
    assert entries == [f"e{n}" for n in range(3, 13)]

    small = ok(kube, path, limit="3")[0]
    assert [i["spec"]["entry"] for i in small["items"]] == ["e10", "e11", "e12"]
    assert "continue" not in small["metadata"]


# ------------------------------------------------------------------------------ input


def test_non_ascii_digits_and_hostile_tokens_are_not_found_or_bad_requests(
    kube: Kube, tenant: str, history_api: HistoryApi
) -> None:
    assert "(NotFound)" in refused(kube, f"namespaces/{tenant}/configrevisions/configentry.x.²")
    assert "(NotFound)" in refused(kube, f"namespaces/{tenant}/auditevents/²")
    assert "(NotFound)" in refused(kube, f"namespaces/{tenant}/auditevents/99999999999999999999")
    body, _ = ok(
        kube, f"namespaces/{tenant}/configrevisions", fieldSelector="metadata.name=configentry.x.²"
    )
    assert body["items"] == []

    deep = base64.urlsafe_b64encode(b"[" * 3000).decode()
    message = refused(kube, f"namespaces/{tenant}/configrevisions", limit="5", **{"continue": deep})
    assert "(BadRequest)" in message and "continue" in message
    message = refused(kube, f"namespaces/{tenant}/configrevisions", **{"continue": "A" * 5000})
    assert "(BadRequest)" in message and "longer than" in message
    assert not _log_mentions(history_api, "Traceback")


@pytest.mark.parametrize(
    ("resource", "query", "field"),
    [
        ("configrevisions", {"fieldSelector": "spec.revision=99999999999"}, "spec.revision"),
        ("configrevisions", {"fieldSelector": "spec.entry=a\x00b"}, "spec.entry"),
        ("configrevisions", {"fieldSelector": "spec.changedBy=\x00"}, "spec.changedBy"),
        ("configrevisions", {"labelSelector": "ferry.dev/revision=99999999999"}, "revision"),
        ("configrevisions", {"fieldSelector": "current=yes"}, "current"),
        ("configrevisions", {"fieldSelector": "current=1"}, "current"),
        ("auditevents", {"fieldSelector": "metadata.name=99999999999999999999"}, "metadata.name"),
        ("auditevents", {"fieldSelector": "spec.user=a\x00"}, "spec.user"),
    ],
)
def test_values_no_row_can_hold_are_bad_requests_naming_the_field(
    kube: Kube,
    tenant: str,
    history_api: HistoryApi,
    resource: str,
    query: dict[str, str],
    field: str,
) -> None:
    message = refused(kube, f"namespaces/{tenant}/{resource}", **query)
    assert "(BadRequest)" in message and field in message, message
    assert not _log_mentions(history_api, "history store unavailable")


# ------------------------------------------------------------------------------ selectors


def test_every_requirement_of_a_selector_must_hold(
    kube: Kube, database_url: str, history_api: HistoryApi
) -> None:
    ns = kube.namespace("anded")
    insert_revisions(database_url, ns, "x", 1)
    insert_revisions(database_url, ns, "x", 1, kind="ConfigSchema")
    insert_revisions(database_url, ns, "a", 1)
    insert_revisions(database_url, ns, "b", 1)
    path = f"namespaces/{ns}/configrevisions"

    def listed(**query: str) -> list[str]:
        return names(ok(kube, path, **query)[0])

    assert listed(fieldSelector="metadata.name=configentry.x.1") == ["configentry.x.1"]
    assert listed(fieldSelector="metadata.name=configentry.x.1,spec.kind=ConfigSchema") == []
    assert listed(fieldSelector="spec.kind=ConfigSchema,metadata.name=configentry.x.1") == []
    assert listed(fieldSelector="spec.entry=a,spec.entry=b") == []
    assert listed(labelSelector="team=nope,ferry.dev/revision=1") == []
    assert listed(labelSelector="ferry.dev/revision=1,team=nope") == []
    assert listed(fieldSelector="spec.entry=a", labelSelector="ferry.dev/entry-name=b") == []
    assert listed(fieldSelector="spec.entry=a", labelSelector="ferry.dev/entry-name=a") == [
        "configentry.a.1"
    ]
    assert listed(fieldSelector="current=false,spec.entry=a") == ["configentry.a.1"]

    insert_audit(database_url, ns, 2)
    audit = f"namespaces/{ns}/auditevents"
    assert names(ok(kube, audit, fieldSelector="spec.kind=ConfigEntry,spec.kind=Other")[0]) == []
    assert names(ok(kube, audit, fieldSelector="spec.entry=e1", labelSelector="x=y")[0]) == []


# ------------------------------------------------------------------------------ time


def test_a_query_that_cannot_finish_is_cut_off_by_the_statement_timeout(
    kube: Kube, tenant: str, database_url: str, history_api: HistoryApi
) -> None:
    """A table locked by someone else stands for any query too slow to finish: the server gives
    up within its statement timeout and says so, instead of holding a connection for ever."""
    with psycopg.connect(database_url) as conn:  # a transaction, held until the end
        conn.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        out = kube.kubectl(
            "get", "--raw", f"{API}/namespaces/{tenant}/auditevents", "--request-timeout=20s",
            check=False, timeout=60,
        )  # fmt: skip
        took = time.monotonic() - started
        conn.rollback()
    assert out.returncode != 0
    assert "(Timeout)" in out.stderr, out.stderr
    assert took < 15, took


async def test_the_reader_tells_a_refused_value_and_a_slow_statement_from_an_outage(
    schema: str,
) -> None:
    """What PostgreSQL refuses in a value is the caller's (QueryRejected, answered 400), and a
    statement past the reader's statement timeout is cancelled by PostgreSQL (StatementTimeout,
    answered 504): neither is logged as the store being down."""
    database_url = schema
    reader = HistoryReader(database_url, statement_timeout_seconds=0.5)
    await reader.open()
    try:
        with pytest.raises(QueryRejected, match="out of range"):
            await reader.revisions(RevisionQuery(revision=2**40))
        with pytest.raises(QueryRejected, match="NUL"):
            await reader.revisions(RevisionQuery(name="a\x00"))
        with psycopg.connect(database_url) as conn:
            conn.execute("LOCK TABLE revisions IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StatementTimeout, match="statement timeout"):
                await reader.revisions(RevisionQuery(namespace="anywhere"))
            took = time.monotonic() - started
            conn.rollback()
        assert took < 3, took
    finally:
        await reader.close()


def test_revisions_and_audit_rows_are_indexed_by_namespace_first(schema: str) -> None:
    with psycopg.connect(schema, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT t.relname, a.attname FROM pg_index i"
            " JOIN pg_class t ON t.oid = i.indrelid"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]"
            " WHERE t.relname IN ('revisions', 'audit_log') AND i.indisvalid"
        ).fetchall()
    assert ("revisions", "namespace") in rows
    assert ("audit_log", "namespace") in rows
