"""The CLI's errors, and how every command reports failure.

:class:`CliError` is the base of what the CLI itself raises: an argument that does not parse
(``NS/NAME``, a time), input that cannot be read or is not what was asked for. The services it
calls have their own bases: ``HistoryError`` (``ferry.history``), ``ClusterError``
(``ferry.adapters.kube_caller``) and ``StoreError`` (``ferry.adapters.postgres``).
:func:`reported` turns any of them into ``error: <message>`` on stderr and exit status 1; the
messages already name the object, file or revision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ferry.adapters.kube_caller import ClusterError
from ferry.adapters.postgres import StoreError
from ferry.history import HistoryError

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """Base of the CLI's own errors: bad arguments or unusable input."""


class MissingFile(CliError):
    """A file or directory named on the command line does not exist."""


#: What a command reports as ``error: <message>`` rather than a traceback.
REPORTED = (CliError, HistoryError, ClusterError, StoreError)


def reported(command: F) -> F:
    """Decorator for click commands: known errors become ``error: <message>``, exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except REPORTED as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]
