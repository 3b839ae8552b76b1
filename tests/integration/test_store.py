"""The revision store on a real PostgreSQL: idempotent, numbered without gaps, audited."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from ferry.adapters.postgres import HistoryReader, Recorded, Store, StoreUnavailable, migrate
from ferry.adapters.postgres.history import AuditQuery, RevisionQuery
from ferry.adapters.postgres.latest import LatestReader
from ferry.devenv.process import free_port
from ferry.domain.retention import Retention


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    migrate(database_url)  # as the operator does at start; a no-op when it already ran
    store = Store(database_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _record(store: Store, ns: str, uid: str, content: Any, **extra: Any) -> Any:
    return store.record(
        kind="ConfigEntry",
        namespace=ns,
        name="app",
        uid=uid,
        content=content,
        spec={"data": content},
        content_hash=f"sha256:{content}",
        changed_by=extra.get("changed_by", "alice"),
        reason=extra.get("reason"),
    )


def _audit(database_url: str, ns: str) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(  # type: ignore[return-value]
            "SELECT action, revision, details->>'reason' FROM audit_log WHERE namespace=%s"
            " ORDER BY id",
            (ns,),
        ).fetchall()


async def test_same_content_again_returns_the_latest_revision_and_writes_nothing(
    store: Store, database_url: str
) -> None:
    ns = f"st-{uuid.uuid4().hex[:8]}"
    first: Recorded = await _record(store, ns, "uid-1", {"a": 1}, reason="first")
    again: Recorded = await _record(store, ns, "uid-1", {"a": 1}, changed_by="bob")
    second: Recorded = await _record(store, ns, "uid-1", {"a": 2}, changed_by="bob")

    assert (first.created, first.revision.revision) == (True, 1)
    assert (again.created, again.revision.revision) == (False, 1)
    assert again.revision.changed_by == "alice"  # the stored row, not the caller's arguments
    assert (second.created, second.revision.revision) == (True, 2)
    assert second.revision.content == {"a": 2} and second.revision.changed_by == "bob"
    assert _audit(database_url, ns) == [("created", 1, "first"), ("updated", 2, None)]


async def test_a_recreated_object_gets_a_new_revision_even_with_equal_content(
    store: Store, database_url: str
) -> None:
    ns = f"st-{uuid.uuid4().hex[:8]}"
    await _record(store, ns, "uid-1", {"a": 1})
    recreated: Recorded = await _record(store, ns, "uid-2", {"a": 1})

    assert (recreated.created, recreated.revision.revision) == (True, 2)
    assert recreated.revision.uid == "uid-2"
    assert [row[:2] for row in _audit(database_url, ns)] == [("created", 1), ("created", 2)]


async def test_concurrent_records_number_revisions_without_gaps_or_duplicates(
    store: Store, database_url: str
) -> None:
    """Replicas, or a retry racing the original, recording at once: the advisory lock serialises
    them, so equal content is recorded once and distinct contents are numbered 1..n."""
    ns = f"st-{uuid.uuid4().hex[:8]}"
    same = await asyncio.gather(*(_record(store, ns, "uid-1", {"n": 0}) for _ in range(10)))
    assert sorted(r.created for r in same) == [False] * 9 + [True]
    assert {r.revision.revision for r in same} == {1}

    contents = [{"n": i} for i in range(1, 21)]
    results = await asyncio.gather(*(_record(store, ns, "uid-1", c) for c in contents))

    assert sorted(r.revision.revision for r in results) == list(range(2, 22))
    revisions = await store.revisions("ConfigEntry", ns, "app")
    assert [r.revision for r in revisions] == list(range(1, 22))
    assert sorted(row[1] for row in _audit(database_url, ns)) == list(range(1, 22))


async def test_every_postgresql_client_says_unavailable_when_nothing_answers() -> None:
    """A PostgreSQL that refuses connections (a loopback port nobody listens on) reaches every
    caller of the store and of both readers as ``StoreUnavailable`` naming PostgreSQL, never as
    a psycopg error the caller would have to know about, and within the pool's timeout."""
    url = f"postgresql://ferry@127.0.0.1:{free_port()}/ferry"
    store = Store(url, timeout_seconds=1.0)
    history = HistoryReader(url, timeout_seconds=1.0)
    latest = LatestReader(url, timeout_seconds=1.0)
    clients = (store, history, latest)
    for client in clients:
        await client.open()
    calls = {
        "Store.record": _record(store, "ns", "uid", {"a": 1}),
        "Store.audit": store.audit("refreshed", kind="ConfigEntry", namespace="ns", name="app"),
        "Store.revisions": store.revisions("ConfigEntry", "ns", "app"),
        "Store.mark_deleted": store.mark_deleted("ConfigEntry", "ns", "app"),
        "Store.prune": store.prune(Retention(revisions=1)),
        "HistoryReader.revisions": history.revisions(RevisionQuery()),
        "HistoryReader.audit_log": history.audit_log(AuditQuery()),
        "LatestReader.latest": latest.latest("ConfigEntry", "ns", "app"),
        "LatestReader.ping": latest.ping(),
    }
    try:
        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(*calls.values(), return_exceptions=True)
    finally:
        for client in clients:
            await client.close()
    for call, outcome in zip(calls, outcomes, strict=True):
        assert isinstance(outcome, StoreUnavailable), (call, outcome)
        assert str(outcome).startswith("PostgreSQL: "), (call, outcome)
