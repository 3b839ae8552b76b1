"""The CLI's reader of history: synchronous reads, and the CLI's own audit rows (rollback).

The CLI is a short-lived process with no event loop, so one plain connection is simpler and
faster to start than a pool. Every method raises :class:`StoreUnavailable` when PostgreSQL
cannot answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ferry.adapters.postgres.errors import UNAVAILABLE, StoreUnavailable
from ferry.adapters.postgres.records import INSERT_AUDIT, AuditRecord, Revision


class HistoryReader:
    """Use as a context manager: ``with HistoryReader(url) as reader: reader.revisions(…)``."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def __enter__(self) -> HistoryReader:
        try:
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=10, row_factory=dict_row
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        return self

    def __exit__(self, *_: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def _rows(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...]) -> list[dict[str, Any]]:
        assert self._conn is not None, "use HistoryReader as a context manager"
        try:
            return self._conn.execute(sql, params).fetchall()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    def revisions(self, kind: str, namespace: str, name: str) -> list[Revision]:
        rows = self._rows(
            "SELECT * FROM revisions WHERE kind=%s AND namespace=%s AND name=%s ORDER BY revision",
            (kind, namespace, name),
        )
        return [Revision.from_row(r) for r in rows]

    def kinds_with_history(self, namespace: str, name: str) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT kind FROM revisions WHERE namespace=%s AND name=%s ORDER BY kind",
            (namespace, name),
        )
        return [str(r["kind"]) for r in rows]

    def state_at(self, at: dt.datetime | None, namespace: str | None = None) -> list[Revision]:
        """The revision current at ``at`` (default: now) of every object that existed then:
        its latest revision created at or before ``at``, unless a deletion came after it."""
        rows = self._rows(
            "WITH last AS (SELECT DISTINCT ON (kind, namespace, name) * FROM revisions"
            "   WHERE (%(at)s::timestamptz IS NULL OR created_at <= %(at)s::timestamptz)"
            "   AND (%(ns)s::text IS NULL OR namespace = %(ns)s::text)"
            "   ORDER BY kind, namespace, name, revision DESC)"
            " SELECT last.* FROM last WHERE NOT EXISTS (SELECT 1 FROM audit_log d"
            "   WHERE d.action='deleted' AND d.kind=last.kind AND d.namespace=last.namespace"
            "   AND d.name=last.name AND d.at >= last.created_at"
            "   AND (%(at)s::timestamptz IS NULL OR d.at <= %(at)s::timestamptz))"
            " ORDER BY namespace, kind, name",
            {"at": at, "ns": namespace},
        )
        return [Revision.from_row(r) for r in rows]

    def audit_log(
        self,
        *,
        since: dt.datetime | None = None,
        username: str | None = None,
        namespace: str | None = None,
        kinds: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Audit rows, oldest first, newest ``limit`` of those matching."""
        rows = self._rows(
            "SELECT * FROM (SELECT * FROM audit_log"
            "   WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)"
            "   AND (%(user)s::text IS NULL OR username = %(user)s::text)"
            "   AND (%(ns)s::text IS NULL OR namespace = %(ns)s::text)"
            "   AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))"
            "   ORDER BY at DESC, id DESC LIMIT %(limit)s) newest ORDER BY at, id",
            {
                "since": since,
                "user": username,
                "ns": namespace,
                "kinds": list(kinds) if kinds is not None else None,
                "limit": limit,
            },
        )
        return [AuditRecord.from_row(r) for r in rows]

    def append_audit(
        self,
        action: str,
        *,
        kind: str,
        namespace: str,
        name: str,
        uid: str | None = None,
        username: str | None = None,
        revision: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._rows(
            INSERT_AUDIT + " RETURNING id",
            (action, kind, namespace, name, uid, username, revision, Jsonb(dict(details or {}))),
        )
