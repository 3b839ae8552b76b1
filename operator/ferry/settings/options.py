"""What the command line and the docs need to know about each setting, read off the dataclasses.

One :class:`Option` per field of each group in :class:`~ferry.settings.Settings`: its option and
environment variable names, value type, bounds, default and help (the field's docstring, read
from the source as Sphinx does, since Python keeps no attribute docstrings at run time).
``ferry run`` turns these into click options (:mod:`ferry.cli.run`);
:mod:`ferry.settings.docs` into the table in docs/configuration.md.
"""

from __future__ import annotations

import ast
import inspect
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from functools import cache
from itertools import pairwise
from typing import Any, Literal, TypeVar

from ferry.settings import Settings
from ferry.settings.base import ENV_ONLY, Name, Range, hints, unpack

S = TypeVar("S")


@dataclass(frozen=True)
class Option:
    group: str  # the group's attribute on Settings: "reconcile"
    field: str  # the field's attribute on the group: "workers"
    option: str | None  # "--workers"; None: environment only (a credential)
    env: str  # "FERRY_WORKERS"
    type: type  # str, int, float or Path (of each item, when ``multiple``)
    optional: bool  # None is a valid value (the setting may be unset)
    multiple: bool  # a tuple of values: the option repeats, the variable is space-separated
    choices: tuple[str, ...] | None
    bounds: Range | None
    default: Any  # dataclasses.MISSING when the setting is required
    help: str

    @property
    def path(self) -> str:
        """``reconcile.workers``: where the value is in :class:`~ferry.settings.Settings`."""
        return f"{self.group}.{self.field}"

    @property
    def required(self) -> bool:
        return self.default is MISSING


@cache
def options() -> tuple[Option, ...]:
    """Every setting, in the order of :class:`~ferry.settings.Settings` and its groups."""
    found: list[Option] = []
    for group in fields(Settings):
        cls = hints(Settings)[group.name]
        prefix = cls.option_prefix or group.name
        docs = field_docs(cls)
        for item in fields(cls):
            base, optional, extras = unpack(hints(cls)[item.name])
            name = next((extra for extra in extras if isinstance(extra, Name)), None)
            stem = name.option if name else f"{prefix}-{item.name.replace('_', '-')}"
            env = (name.env if name else None) or "FERRY_" + stem.upper().replace("-", "_")
            multiple = typing.get_origin(base) is tuple
            if multiple:
                (base,) = {arg for arg in typing.get_args(base) if arg is not Ellipsis}
            choices = None
            if typing.get_origin(base) is Literal:
                choices, base = tuple(typing.get_args(base)), str
            default = item.default
            if item.default_factory is not MISSING:
                default = item.default_factory()
            if item.name not in docs:
                raise TypeError(f"{cls.__name__}.{item.name} has no docstring")
            found.append(
                Option(
                    group=group.name,
                    field=item.name,
                    option=None if ENV_ONLY in extras else f"--{stem}",
                    env=env,
                    type=base,
                    optional=optional,
                    multiple=multiple,
                    choices=choices,
                    bounds=next((extra for extra in extras if isinstance(extra, Range)), None),
                    default=default,
                    help=docs[item.name],
                )
            )
    return tuple(found)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a class (``name: type = default`` then
    ``\"\"\"text\"\"\"``), with its lines joined."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, following in pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return docs


def build(values: Mapping[str, Any], into: type[S] = Settings) -> S:  # type: ignore[assignment]
    """Settings from values keyed by :attr:`Option.path`; a missing key takes the default.
    ``into``: :class:`~ferry.settings.Settings` or a class holding some of its groups
    (:class:`~ferry.settings.AdmissionSettings`), built of those groups only."""
    groups: dict[str, dict[str, Any]] = {group.name: {} for group in fields(into)}
    for option in options():
        if option.path in values and option.group in groups:
            groups[option.group][option.field] = values[option.path]
    return into(**{name: hints(Settings)[name](**kw) for name, kw in groups.items()})


__all__ = ["Option", "build", "field_docs", "options"]
