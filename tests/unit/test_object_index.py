"""ferry.reconcile.world.ObjectIndex: Kopf's index semantics for the informers' indexes."""

from __future__ import annotations

import sys
import threading

from ferry.reconcile.world import ObjectIndex


def test_each_object_contributes_under_its_keys_and_takes_them_back() -> None:
    index: ObjectIndex[str, str] = ObjectIndex()
    index.put(("ns", "a"), {"uid-1": "a"})
    index.put(("other", "a"), {"uid-1": "a-there"})
    index.put(("ns", "b"), {"uid-2": "b"})
    assert sorted(index["uid-1"]) == ["a", "a-there"]
    assert index.get("uid-3", []) == [] and len(index) == 2

    before = index.put(("ns", "a"), {"uid-2": "a-moved"})  # relabelled to another owner
    assert before == {"uid-1": "a"}
    assert index["uid-1"] == ["a-there"] and sorted(index["uid-2"]) == ["a-moved", "b"]

    assert index.drop(("other", "a")) == {"uid-1": "a-there"}
    assert "uid-1" not in index  # no empty key left behind
    index.put(("ns", "b"), {})  # contributes nothing now
    assert index["uid-2"] == ["a-moved"]
    assert index.drop(("ns", "zzz")) == {}


def test_an_object_being_replaced_never_looks_absent_to_another_thread() -> None:
    """The admission webhooks read the indexes from their own thread while the informers
    update them: a schema or entry being updated must not vanish for an instant (a refusal
    or a missed check would follow). Threads switched as often as CPython allows; the former
    drop-then-insert was seen absent in most reads."""
    index: ObjectIndex[str, int] = ObjectIndex()
    index.put(("ns", "a"), {"a": 0})
    done = threading.Event()
    absent = 0

    def read() -> None:
        nonlocal absent
        while not done.is_set():
            absent += not index.get("a")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read)
    try:
        reader.start()
        for i in range(20_000):
            index.put(("ns", "a"), {"a": i})
    finally:
        done.set()
        reader.join(timeout=10)
        sys.setswitchinterval(interval)
    assert absent == 0
    assert index["a"] == [19_999]
