"""Ferry's fixes to Kopf keep Kopf's semantics: waiters wake when the set's state changes, and
admission patches do what Kopf's own would."""

from __future__ import annotations

import asyncio
import copy

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kopf import Body, Patch
from kopf._cogs.aiokits.aiotoggles import ToggleSet

from ferry.handlers import kopf_tuning


@pytest.fixture(autouse=True, scope="module")
def patched() -> None:
    assert kopf_tuning.apply()


async def test_waiters_wake_when_the_last_blocking_toggle_is_dropped() -> None:
    toggles = ToggleSet(all)
    blockers = [await toggles.make_toggle(False) for _ in range(500)]
    waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(500)]
    await asyncio.sleep(0)

    for blocker in blockers[:-1]:
        await toggles.drop_toggle(blocker)
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)

    await toggles.drop_toggle(blockers[-1])
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert toggles.is_on()


async def test_adding_a_blocking_toggle_wakes_those_waiting_for_off() -> None:
    toggles = ToggleSet(all)
    waiting = asyncio.create_task(toggles.wait_for(False))
    await asyncio.sleep(0)
    assert not waiting.done()

    toggle = await toggles.make_toggle(False)
    await asyncio.wait_for(waiting, timeout=5)

    await toggles.drop_toggles([toggle])
    assert toggles.is_on()


async def test_turning_a_toggle_still_wakes_waiters() -> None:
    toggles = ToggleSet(all)
    toggle = await toggles.make_toggle(False)
    waiting = asyncio.create_task(toggles.wait_for(True))
    await asyncio.sleep(0)

    await toggle.turn_to(True)

    await asyncio.wait_for(waiting, timeout=5)


# ------------------------------------------------------------------------------ admission patches

_keys = st.sampled_from(["a", "b", "ferry.dev/changed-by", "x~y", "metadata", "annotations"])
_scalars = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.booleans())
_values = st.recursive(
    _scalars | st.lists(_scalars, max_size=3),
    lambda inner: st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_patches = st.recursive(
    st.none() | _scalars | st.lists(_scalars, max_size=3),
    lambda inner: st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


@given(
    body=st.dictionaries(_keys, _values, max_size=5),
    patch=st.dictionaries(_keys, _patches, min_size=1, max_size=4),
)
@settings(max_examples=500, deadline=None)
def test_admission_patch_has_the_effect_of_kopfs_own(body: dict, patch: dict) -> None:
    """Applied to the object, the operations do exactly what Kopf's deep-copy-and-diff ones do
    (and where Kopf cannot apply a patch at all, it fails the same way)."""
    try:
        theirs = kopf_tuning._kopf_as_json_patch(
            Patch(copy.deepcopy(patch), body=Body(copy.deepcopy(body)))
        )
    except TypeError:
        with pytest.raises(TypeError):
            Patch(copy.deepcopy(patch), body=Body(copy.deepcopy(body))).as_json_patch()
        return
    ours = Patch(copy.deepcopy(patch), body=Body(copy.deepcopy(body))).as_json_patch()

    assert jsonpatch.apply_patch(body, ours) == jsonpatch.apply_patch(body, theirs)


def test_admission_patch_names_only_what_changes() -> None:
    body = Body({"metadata": {"name": "n", "annotations": {"keep": "1", "ferry.dev/by": "a"}}})
    patch = Patch(body=body)
    patch.metadata.annotations["ferry.dev/by"] = "bob"
    patch.metadata.annotations["keep"] = "1"  # same value: no operation
    patch.metadata.labels["new"] = "x"

    assert patch.as_json_patch() == [
        {"op": "replace", "path": "/metadata/annotations/ferry.dev~1by", "value": "bob"},
        {"op": "add", "path": "/metadata/labels", "value": {"new": "x"}},
    ]
    assert Patch(body=body).as_json_patch() == []
