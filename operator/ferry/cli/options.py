"""Options several commands share: who the CLI acts as in Kubernetes, as kubectl takes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ferry.adapters.kube_caller import Identity

F = TypeVar("F", bound=Callable[..., Any])


def identity_options(command: F) -> F:
    """``--kubeconfig``, ``--context``, ``--as`` and ``--as-group``; see :func:`identity`."""
    options = [
        click.option("--kubeconfig", envvar="KUBECONFIG", default=None),
        click.option("--context", default=None, help="kubeconfig context (default: current)."),
        click.option("--as", "as_user", default=None, help="Impersonate this user."),
        click.option("--as-group", "as_groups", multiple=True, help="Impersonate this group."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def identity(kw: dict[str, Any]) -> Identity:
    """The :class:`Identity` the options describe (removed from ``kw``)."""
    return Identity(
        kubeconfig=kw.pop("kubeconfig"),
        context=kw.pop("context"),
        as_user=kw.pop("as_user"),
        as_groups=tuple(kw.pop("as_groups")),
    )
