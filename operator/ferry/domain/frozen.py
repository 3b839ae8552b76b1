"""JSON values that cannot change, and facts derived from them, remembered on them.

Every admission check of an entry and every reconcile of it asks the same questions of its
ConfigSchema: its canonical text (what the compiled validator is found by), whether it is small
and flat enough to be checked on the admission thread. Each answer costs a walk over the whole
schema: a third of an ordinary entry's check (decision 0033). The index therefore keeps each
schema's spec frozen (``ferry.handlers.watches.snapshot``), and :func:`remembered` keeps an
answer on the frozen value itself: what proves a remembered answer right is that the value it
was computed from can no longer change.

:class:`FrozenDict` and :class:`FrozenList` are ``dict`` and ``list`` (jsonschema, ``json`` and
every ``isinstance`` check see JSON objects and arrays) whose every mutating method raises
``TypeError``. Pickled or copied, they come back frozen and without remembered facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


def _immutable(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(f"a {type(self).__name__} cannot be changed")


class FrozenDict(dict[str, Any]):
    """A JSON object that cannot change (see the module docstring)."""

    __slots__ = ("_facts",)
    _facts: dict[str, Any]  # set by the first ``remembered``

    __setitem__ = __delitem__ = __ior__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A JSON array that cannot change (see the module docstring)."""

    __slots__ = ()

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _immutable
    append = extend = insert = pop = remove = clear = sort = reverse = _immutable

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        return (FrozenList, (list(self),))


def freeze(value: Any) -> Any:
    """A frozen copy of the JSON value ``value`` (mappings and lists or tuples copied, scalars
    shared), built without recursion: children before their parents."""
    if not isinstance(value, Mapping | list | tuple):
        return value
    order, stack = [], [value]
    while stack:  # every container, each parent before its children
        node = stack.pop()
        order.append(node)
        stack.extend(
            child
            for child in (node.values() if isinstance(node, Mapping) else node)
            if isinstance(child, Mapping | list | tuple)
        )
    done: dict[int, Any] = {}  # id of a container in ``value`` → its frozen copy
    for node in reversed(order):  # each child before its parent
        if isinstance(node, Mapping):
            done[id(node)] = FrozenDict(
                (key, done.get(id(child), child)) for key, child in node.items()
            )
        else:
            done[id(node)] = FrozenList(done.get(id(child), child) for child in node)
    return done[id(value)]


def remembered(value: object, fact: str, compute: Callable[..., T], *args: Any) -> T:
    """``compute(*args)``, kept on ``value`` under ``fact`` if ``value`` is a
    :class:`FrozenDict` (it cannot change, so neither can what is computed from it alone); for
    any other value, computed each time. Two threads asking at once may both compute it."""
    if type(value) is not FrozenDict:
        return compute(*args)
    try:
        facts = value._facts
    except AttributeError:
        facts = value._facts = {}
    if fact not in facts:
        facts[fact] = compute(*args)
    return facts[fact]  # type: ignore[no-any-return]
