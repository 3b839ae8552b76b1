"""A targeted fix to Kopf, for operators that index thousands of objects.

**Start-up.** Kopf delays every handler until all indexed objects are indexed, with one toggle per
object in a shared ``ToggleSet``. Each dropped toggle wakes *every* waiting object worker to
re-check the whole set: O(N²) wake-ups. Measured here with 5,000 ConfigEntries: 264 s from start
to the first reconcile. Waiters only care whether the set as a whole is on or off, so waking them
only when that changes is equivalent — and linear.

Applied only to the Kopf version it was written against (pinned in pyproject.toml); any other
version is left untouched with a warning. See docs/decisions/0009-kopf-startup-at-scale.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import version

from kopf._cogs.aiokits.aiotoggles import Toggle, ToggleSet

logger = logging.getLogger(__name__)
PATCHED_FOR = "1.45.2"


async def _make_toggle(self: ToggleSet, __val: bool = False, *, name: str | None = None) -> Toggle:
    toggle = Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: ToggleSet, toggle: Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggles(self: ToggleSet, toggles: Iterable[Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


def apply() -> bool:
    """Install the fix if Kopf is the version it was checked against; returns whether it did."""
    installed = version("kopf")
    if installed != PATCHED_FOR:
        logger.warning("kopf %s: fixes written for %s not applied", installed, PATCHED_FOR)
        return False
    ToggleSet.make_toggle = _make_toggle  # type: ignore[method-assign]
    ToggleSet.drop_toggle = _drop_toggle  # type: ignore[method-assign]
    ToggleSet.drop_toggles = _drop_toggles  # type: ignore[method-assign]
    return True
