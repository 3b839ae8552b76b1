"""Semantic versions compared the way flagd's ``sem_ver`` operator compares them.

flagd (Go) prefixes a ``v`` and hands the string to ``golang.org/x/mod/semver``; the testbed's
``@semver-edge-cases`` add that a leading ``v``/``V`` is accepted, that ``1`` and ``1.2`` mean
``1.0.0`` and ``1.2.0``, and that build metadata is ignored. Prerelease tags follow semver.org
precedence. ``^`` means "same major" and ``~`` "same major.minor" — flagd's meaning, not npm's (no
special case for 0.x).

Rule values must be full ``X.Y.Z[-pre][+build]`` (flagd's schema ``semVerString``); attribute
values get the lenient reading above, because they come from SDK callers.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# A long attribute cannot make the (linear) pattern slow, but there is no reason to parse one.
MAX_VERSION_LENGTH = 256

_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_PRE = rf"{_PRE_ID}(?:\.{_PRE_ID})*"
_BUILD = rf"{_BUILD_ID}(?:\.{_BUILD_ID})*"

#: Exactly flagd-schemas' ``semVerString`` pattern: what a rule's ``value`` must look like.
STRICT = re.compile(rf"({_NUM})\.({_NUM})\.({_NUM})(?:-({_PRE}))?(?:\+({_BUILD}))?")
# Go's x/mod/semver shorthand: "v1" and "v1.2" are valid, but only without prerelease or build.
_LENIENT = re.compile(rf"({_NUM})(?:\.({_NUM})(?:\.({_NUM})(?:-({_PRE}))?(?:\+({_BUILD}))?)?)?")

#: Sort key of a version: (major, minor, patch, prerelease key). A release sorts above any of its
#: prereleases; numeric identifiers sort below alphanumeric ones, shorter lists below longer ones.
Version = tuple[int, int, int, tuple[Any, ...]]

_RELEASE: tuple[Any, ...] = (1,)


def _key(match: re.Match[str]) -> Version:
    major, minor, patch, pre = match.group(1), match.group(2), match.group(3), match.group(4)
    if pre is None:
        pre_key = _RELEASE
    else:
        pre_key = (
            0,
            *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")),
        )
    return (int(major), int(minor or 0), int(patch or 0), pre_key)


def parse_strict(text: str) -> Version | None:
    """Key of a rule value, or None when flagd's schema would reject it."""
    match = STRICT.fullmatch(text)
    return _key(match) if match else None


@lru_cache(maxsize=4096)
def _parse_lenient(text: str) -> Version | None:
    if len(text) > MAX_VERSION_LENGTH:
        return None
    if text[:1] in ("v", "V"):
        text = text[1:]
    match = _LENIENT.fullmatch(text)
    return _key(match) if match else None


def parse_attribute(value: object) -> Version | None:
    """Key of a context value, or None (the condition is then false, as in flagd).

    Numbers are read as their decimal text (``1`` → ``1.0.0``), as the testbed's
    ``semver-partial-version-flag`` expects; booleans are not versions. Cached because the same
    client versions recur in every request.
    """
    if isinstance(value, str):
        return _parse_lenient(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return _parse_lenient(repr(value))
        value = int(value)
    return _parse_lenient(str(value))


#: flagd ``sem_ver`` operator → test on (attribute key, rule key).
COMPARATORS: dict[str, Any] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "^": lambda a, b: a[0] == b[0],
    "~": lambda a, b: a[0] == b[0] and a[1] == b[1],
}
