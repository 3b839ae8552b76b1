"""Read-only access for ``ferry serve``: what an object's latest revision is, unless it is deleted.

``ferry serve`` reads PostgreSQL only when Redis is down or lacks a key, so a small pool with short
timeouts: a request falls back here, and fails fast (503) when both are down.
"""

from __future__ import annotations

from ferry.adapters.postgres.pool import Pooled
from ferry.adapters.postgres.records import Revision

# The latest revision of one object, unless a deletion was recorded after it (a re-created object
# starts a new revision, which hides an earlier deletion).
_LATEST = (
    "SELECT r.* FROM revisions r WHERE r.kind=%(kind)s AND r.namespace=%(ns)s"
    " AND (%(name)s::text IS NULL OR r.name=%(name)s::text)"
    " AND r.revision = (SELECT max(revision) FROM revisions m"
    "   WHERE m.kind=r.kind AND m.namespace=r.namespace AND m.name=r.name)"
    " AND NOT EXISTS (SELECT 1 FROM audit_log d WHERE d.action='deleted' AND d.kind=r.kind"
    "   AND d.namespace=r.namespace AND d.name=r.name AND d.at >= r.created_at)"
    " ORDER BY r.name"
)


class LatestReader(Pooled):
    """``open()`` before use, ``close()`` after; every method raises :class:`StoreUnavailable`
    when PostgreSQL cannot answer."""

    def __init__(self, database_url: str, *, max_size: int = 4, timeout_seconds: float = 3.0):
        super().__init__(database_url, max_size=max_size, timeout_seconds=timeout_seconds)

    async def latest(self, kind: str, namespace: str, name: str) -> Revision | None:
        """The object's latest revision; None if it has none or was deleted since."""
        rows = await self._rows(_LATEST, {"kind": kind, "ns": namespace, "name": name})
        return Revision.from_row(rows[0]) if rows else None

    async def latest_in_namespace(self, kind: str, namespace: str) -> list[Revision]:
        """The latest revision of every object of ``kind`` in ``namespace`` that is not deleted."""
        rows = await self._rows(_LATEST, {"kind": kind, "ns": namespace, "name": None})
        return [Revision.from_row(r) for r in rows]

    async def revision(self, kind: str, namespace: str, name: str, number: int) -> Revision | None:
        rows = await self._rows(
            "SELECT * FROM revisions WHERE kind=%(kind)s AND namespace=%(ns)s AND name=%(name)s"
            " AND revision=%(rev)s",
            {"kind": kind, "ns": namespace, "name": name, "rev": number},
        )
        return Revision.from_row(rows[0]) if rows else None

    async def ping(self) -> None:
        await self._rows("SELECT 1 AS ok", {})
