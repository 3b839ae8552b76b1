"""Two targeted fixes to Kopf, for operators that index thousands of objects and answer admission
requests on the path of every ``kubectl apply``.

**Start-up.** Kopf delays every handler until all indexed objects are indexed, with one toggle per
object in a shared ``ToggleSet``. Each dropped toggle wakes *every* waiting object worker to
re-check the whole set: O(N²) wake-ups. Measured here with 5,000 ConfigEntries: 264 s from start
to the first reconcile. Waiters only care whether the set as a whole is on or off, so waking them
only when that changes is equivalent — and linear.

**Admission patches.** For every admission request Kopf turns the handlers' merge-patch into JSON
Patch operations by deep-copying the whole object, applying the patch to the copy and diffing the
two with ``jsonpatch`` — even when the patch is empty (every validating request). With a 10 KB
ConfigEntry that was a sixth of the time spent answering. A merge-patch only touches the paths it
names, so the operations can be read off by walking the patch alongside the object. Patches that
remove keys (Kopf then also prunes emptied parents), that carry callable transformations, or that
would descend into a non-object still take Kopf's way.

Applied only to the Kopf version it was written against (pinned in pyproject.toml); any other
version is left untouched with a warning. See docs/decisions/0009-kopf-startup-at-scale.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from typing import Any

from kopf._cogs.aiokits.aiotoggles import Toggle, ToggleSet
from kopf._cogs.structs.patches import JSONPatch, Patch

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


_kopf_as_json_patch = Patch.as_json_patch


class _NeedsKopf(Exception):
    """The patch is outside what the walk below handles; Kopf's own way gives the answer."""


def _as_json_patch(self: Patch, body: Any = None) -> JSONPatch:
    if not self:
        return []
    base = body if body is not None else self._original
    if self.fns or base is None:
        return _kopf_as_json_patch(self, body)
    try:
        return _merge_patch_ops(base, self, "")
    except _NeedsKopf:
        return _kopf_as_json_patch(self, body)


def _merge_patch_ops(current: Mapping[str, Any], patch: Mapping[str, Any], at: str) -> JSONPatch:
    """JSON Patch operations with the effect of merge-patching ``current`` with ``patch`` (objects
    merge, anything else replaces), without no-op operations."""
    ops: JSONPatch = []
    for key, value in patch.items():
        path = f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}"
        present = key in current
        old = current.get(key)
        if value is None:
            raise _NeedsKopf  # a removal
        if isinstance(value, Mapping):
            if present and isinstance(old, Mapping):
                ops.extend(_merge_patch_ops(old, value, path))
            elif present:
                raise _NeedsKopf  # merging into a scalar or a list
            elif built := _merged(value):
                ops.append({"op": "add", "path": path, "value": built})
        elif not present:
            ops.append({"op": "add", "path": path, "value": value})
        elif old != value:
            ops.append({"op": "replace", "path": path, "value": value})
    return ops


def _merged(patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` applied to an absent object: what gets created (empty objects are not)."""
    created: dict[str, Any] = {}
    for key, value in patch.items():
        if value is None:
            raise _NeedsKopf
        if not isinstance(value, Mapping):
            created[key] = value
        elif nested := _merged(value):
            created[key] = nested
    return created


def apply() -> bool:
    """Install the fix if Kopf is the version it was checked against; returns whether it did."""
    installed = version("kopf")
    if installed != PATCHED_FOR:
        logger.warning("kopf %s: fixes written for %s not applied", installed, PATCHED_FOR)
        return False
    ToggleSet.make_toggle = _make_toggle  # type: ignore[method-assign]
    ToggleSet.drop_toggle = _drop_toggle  # type: ignore[method-assign]
    ToggleSet.drop_toggles = _drop_toggles  # type: ignore[method-assign]
    Patch.as_json_patch = _as_json_patch  # type: ignore[method-assign]
    return True
