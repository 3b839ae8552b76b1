"""ferry.reconcile.world.ObjectIndex: Kopf's index semantics for the informers' indexes."""

from __future__ import annotations

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
