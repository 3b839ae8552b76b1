"""The operator's revision store and audit log: asynchronous, over a small connection pool.

Record-before-materialise hinges on ``record``: it is idempotent by content hash, so a crash or a
retry between the insert and the status write never creates a duplicate revision, and a revision
row exists before any content reaches a workload.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ferry.adapters.postgres.pool import Pooled
from ferry.adapters.postgres.records import INSERT_AUDIT, Recorded, Revision
from ferry.domain.retention import Retention


@dataclass(frozen=True)
class Pruned:
    revisions: int
    audit_rows: int


class Store(Pooled):
    """Async access to revisions and the audit log over a small connection pool."""

    async def record(
        self,
        *,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        content: Any,
        spec: Any,
        content_hash: str,
        changed_by: str | None,
        reason: str | None,
        action: str = "updated",
    ) -> Recorded:
        """Insert revision n+1 and its audit row in one transaction, unless ``content_hash`` is
        already the latest revision of this object (then return that one: idempotent).

        One statement, one round trip: ``ferry_record_revision`` (migration 0002) takes the
        per-object advisory lock, reads the latest revision and writes both rows.
        """
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT * FROM ferry_record_revision(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (
                    kind,
                    uid,
                    namespace,
                    name,
                    Jsonb(content),
                    Jsonb(spec),
                    content_hash,
                    changed_by,
                    reason,
                    action,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return Recorded(Revision.from_row(row), created=bool(row["created"]))

    async def audit(
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
        """Append to the audit trail. Best effort for non-revision actions: never blocks a sync."""
        async with self._connection() as conn:
            await conn.execute(
                INSERT_AUDIT,
                (
                    action,
                    kind,
                    namespace,
                    name,
                    uid,
                    username,
                    revision,
                    Jsonb(dict(details or {})),
                ),
            )

    async def revisions(self, kind: str, namespace: str, name: str) -> list[Revision]:
        rows = await self._rows(
            "SELECT * FROM revisions WHERE kind=%(kind)s AND namespace=%(ns)s AND name=%(name)s"
            " ORDER BY revision",
            {"kind": kind, "ns": namespace, "name": name},
        )
        return [Revision.from_row(r) for r in rows]

    async def mark_deleted(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        username: str | None = None,
        uid: str | None = None,
    ) -> bool:
        """Write a 'deleted' audit row for an object with history, unless its last event already
        is one. Point-in-time export needs deletions; it is called when an entry's finalizer is
        about to go and, for kinds without one (ConfigSchema), when their watch says the object
        is gone — either may happen more than once (a retry after a statement that committed
        although its answer was lost), and writes one row."""
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO audit_log (action, kind, namespace, name, uid, username, details)"
                " SELECT 'deleted', %(kind)s, %(ns)s, %(name)s, %(uid)s, %(user)s, '{}'::jsonb"
                " WHERE EXISTS (SELECT 1 FROM revisions"
                "   WHERE kind=%(kind)s AND namespace=%(ns)s AND name=%(name)s)"
                " AND NOT EXISTS (" + _DELETED_AFTER_LATEST_REVISION + ")",
                {"kind": kind, "ns": namespace, "name": name, "user": username, "uid": uid},
            )
            return cur.rowcount == 1

    async def prune(self, policy: Retention, now: dt.datetime | None = None) -> Pruned:
        """Apply the retention policy in one transaction (rules: :class:`Retention`)."""
        async with self._connection() as conn, conn.transaction():
            return await _prune(conn, policy, now or dt.datetime.now(dt.UTC))


# An object's deletion counts when it comes after its latest revision: a re-created object
# starts a new revision, which hides an earlier deletion.
_DELETED_AFTER_LATEST_REVISION = (
    "SELECT 1 FROM audit_log d WHERE d.action='deleted' AND d.kind=%(kind)s"
    " AND d.namespace=%(ns)s AND d.name=%(name)s AND d.at >= (SELECT max(created_at)"
    " FROM revisions WHERE kind=%(kind)s AND namespace=%(ns)s AND name=%(name)s)"
)


async def _prune(conn: Any, policy: Retention, now: dt.datetime) -> Pruned:
    revision_cutoff, audit_cutoff = policy.cutoffs(now)
    deleted_cutoff = policy.deleted_cutoff(now)
    removed_revisions = removed_audit = 0
    if deleted_cutoff is not None:
        cur = await conn.execute(
            "WITH latest AS (SELECT kind, namespace, name, max(created_at) AS last_at"
            "   FROM revisions GROUP BY kind, namespace, name),"
            " gone AS (SELECT l.kind, l.namespace, l.name FROM latest l WHERE EXISTS ("
            "   SELECT 1 FROM audit_log d WHERE d.action='deleted' AND d.kind=l.kind"
            "   AND d.namespace=l.namespace AND d.name=l.name AND d.at >= l.last_at"
            "   AND d.at < %(cutoff)s))"
            " DELETE FROM revisions r USING gone g"
            " WHERE r.kind=g.kind AND r.namespace=g.namespace AND r.name=g.name",
            {"cutoff": deleted_cutoff},
        )
        removed_revisions += cur.rowcount
    if policy.revisions is not None or revision_cutoff is not None:
        cur = await conn.execute(
            "WITH ranked AS (SELECT id,"
            "   row_number() OVER (PARTITION BY kind, namespace, name ORDER BY revision DESC)"
            "     AS rank,"
            "   lead(created_at) OVER (PARTITION BY kind, namespace, name ORDER BY revision)"
            "     AS superseded_at"
            "   FROM revisions)"
            " DELETE FROM revisions WHERE id IN (SELECT id FROM ranked WHERE rank > 1"
            "   AND (%(keep)s::int IS NULL OR rank > %(keep)s::int)"
            "   AND (%(cutoff)s::timestamptz IS NULL OR superseded_at < %(cutoff)s::timestamptz))",
            {"keep": policy.revisions, "cutoff": revision_cutoff},
        )
        removed_revisions += cur.rowcount
    if audit_cutoff is not None:
        cur = await conn.execute("DELETE FROM audit_log WHERE at < %s", (audit_cutoff,))
        removed_audit = cur.rowcount
    return Pruned(removed_revisions, removed_audit)
