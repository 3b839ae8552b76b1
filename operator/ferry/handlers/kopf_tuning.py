"""A targeted fix to Kopf, and a lighter diff base, for operators that index thousands of objects.

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
from typing import Any

import kopf
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


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf's diff base (``settings.persistence.diffbase_storage``) for an operator without
    change-detecting handlers.

    For every watch event Kopf deep-copies the object into an "essence" and diffs it with the
    last handled one, which it keeps in an annotation; only ``on.create``/``on.update``/
    ``on.resume``/``on.field`` handlers use the result. Ferry has none (its handlers are
    ``on.event`` and indexes: every event becomes a work-queue key, and reconciling compares
    with the indexes). With 5,000 new entries that copy was 3 % of the operator's CPU
    (docs/benchmarks.md, "Reconciliation"). What proves it safe:
    ``tests/unit/test_kopf_tuning.py`` fails if a change-detecting handler is ever registered.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None
