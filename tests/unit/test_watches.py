"""Which watch events queue a reconcile: not the status and finalizer writes Ferry makes itself."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ferry.handlers.watches import changed as event_changes


def body(generation: int = 1, **meta: Any) -> Any:
    status = meta.pop("status", {})
    return {
        "metadata": {"namespace": "ns", "name": "e", "uid": "u1", "generation": generation, **meta},
        "status": status,
    }


def test_only_spec_deletion_and_annotation_changes_queue_a_reconcile() -> None:
    runtime: Any = SimpleNamespace(seen={})

    def changed(event: str, obj: Any) -> bool:
        return event_changes(runtime, "ConfigEntry", event, ("ns", "e"), obj)

    assert changed("ADDED", body())  # first sight, e.g. after a restart
    assert not changed("MODIFIED", body(status={"revision": 1}))  # Ferry's status write
    assert not changed("MODIFIED", body(finalizers=["ferry.dev/cleanup"]))  # its finalizer
    assert changed("MODIFIED", body(2))  # a new spec
    assert changed("MODIFIED", body(2, annotations={"ferry.dev/change-reason": "r"}))
    assert changed("MODIFIED", body(2, deletionTimestamp="2026-11-22T00:00:00Z"))
    assert not changed("MODIFIED", body(2, deletionTimestamp="2026-11-22T00:00:00Z"))
    assert changed("DELETED", body(2))
    assert changed("ADDED", body(1, uid="u2"))  # re-created under the same name
