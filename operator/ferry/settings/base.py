"""How the settings in :mod:`ferry.settings` are declared and checked.

A field's type may be wrapped in ``Annotated`` with these markers: :class:`Range` (bounds,
checked when a group is built and by the command line), :class:`Name` (an option and variable name
in use before the settings were grouped) and :data:`ENV_ONLY` (a credential, read from its
environment variable only, since any user of a machine can read another process's arguments).
Every group derives from :class:`SettingsGroup`, so a value of the wrong type or out of range raises
:class:`SettingsError` naming the setting, whether it came from the command line or from code.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Annotated, Any, ClassVar, Literal


@dataclass(frozen=True)
class Range:
    """Bounds of a number (inclusive; ``above`` is exclusive, for durations that must be > 0)."""

    min: float | None = None
    max: float | None = None
    above: float | None = None


@dataclass(frozen=True)
class Name:
    """A name in use before the settings were grouped: ``--{option}`` and ``env``
    (default ``FERRY_`` + the option in upper case)."""

    option: str
    env: str | None = None


@dataclass(frozen=True)
class _EnvOnly:
    """A credential: taken from the environment variable only, never from an option."""


ENV_ONLY = _EnvOnly()
PORT = Range(min=1, max=65535)
POSITIVE = Range(min=1)
SECONDS = Range(above=0)


class SettingsError(ValueError):
    """A setting's value is out of range or of the wrong type; the message names the setting."""


class SettingsGroup:
    """Checks a group's values against its field types when it is built, wherever it is built."""

    #: Start of the option and variable names (default: the group's name in :class:`Settings`).
    option_prefix: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        for item in fields(self):  # type: ignore[arg-type]
            check(type(self), item.name, getattr(self, item.name))


@cache
def hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types with their ``Annotated`` extras (resolved once per class)."""
    return typing.get_type_hints(cls, include_extras=True)


def unpack(hint: Any) -> tuple[Any, bool, tuple[Any, ...]]:
    """``Annotated[X | None, extras…]`` → ``(X, True, extras)``."""
    extras: tuple[Any, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *rest = typing.get_args(hint)
        extras = tuple(rest)
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        (hint,) = members
    return hint, optional, extras


def check(cls: type, name: str, value: Any) -> None:
    """Raise :class:`SettingsError` unless ``value`` fits the type and range of ``cls.name``."""
    base, optional, extras = unpack(hints(cls)[name])
    where = f"{cls.__name__}.{name}"
    if value is None:
        if not optional:
            raise SettingsError(f"{where} must be set")
        return
    if typing.get_origin(base) is Literal:
        if value not in typing.get_args(base):
            allowed = ", ".join(repr(choice) for choice in typing.get_args(base))
            raise SettingsError(f"{where} is {value!r}; it must be one of {allowed}")
        return
    if typing.get_origin(base) is tuple:
        (item,) = {arg for arg in typing.get_args(base) if arg is not Ellipsis}
        if not (isinstance(value, tuple) and all(isinstance(v, item) for v in value)):
            raise SettingsError(f"{where} must be a tuple of {item.__name__}, not {value!r}")
        return
    accepted: tuple[type, ...] = (int, float) if base is float else (base,)
    if not isinstance(value, accepted) or (base is not bool and isinstance(value, bool)):
        raise SettingsError(f"{where} must be of type {base.__name__}, not {value!r}")
    number = typing.cast(float, value)  # only numbers carry a Range
    for bounds in (extra for extra in extras if isinstance(extra, Range)):
        if bounds.min is not None and number < bounds.min:
            raise SettingsError(f"{where} is {value}; it must be at least {bounds.min:g}")
        if bounds.max is not None and number > bounds.max:
            raise SettingsError(f"{where} is {value}; it must be at most {bounds.max:g}")
        if bounds.above is not None and number <= bounds.above:
            raise SettingsError(f"{where} is {value}; it must be more than {bounds.above:g}")
