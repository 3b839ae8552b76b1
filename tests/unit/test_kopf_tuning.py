"""Ferry's fix to Kopf keeps Kopf's semantics: waiters wake when the set's state changes."""

from __future__ import annotations

import asyncio

import pytest
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


def test_no_handler_needs_the_diff_base_ferry_does_not_keep() -> None:
    """``NoDiffBase`` is only right while every handler is ``on.event`` or an index: Kopf gives
    a diff only to change-detecting handlers (create, update, resume, field, delete). Kopf has
    no public listing of registered handlers; its registry's own attributes are read here."""
    import kopf

    import ferry.handlers  # noqa: F401 - registers every handler

    registry = kopf.get_default_registry()
    changing = registry._changing.get_all_handlers()
    assert changing == [], [handler.id for handler in changing]
    assert registry._watching.get_all_handlers()  # the on.event handlers are there
