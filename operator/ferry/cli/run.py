"""`ferry run`: the operator.

Its options are generated from :mod:`ferry.settings` (names, types, defaults, help, environment
variables): a setting is added there, never here. A value comes from the option, else from its
environment variable, else from the default.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from ferry.settings import Settings, SettingsError
from ferry.settings.options import Option, build, options

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")

#: CPython's collector thresholds for the operator (its defaults: 700, 10, 10). Young
#: collections at the default pace, so each pause is short: at 10,000 (this decision's first
#: form) each was a 4-16 ms stop of the whole process, admission thread included, and one in
#: every hundred or so admission calls waited for one. The oldest generation is collected 10x
#: less often than by default: a full collection scans every index (entries, schemas,
#: materialised objects), and at the default one came every few seconds under load.
#: Decision: docs/decisions/0025-garbage-collection-thresholds.md.
GC_THRESHOLDS = (700, 10, 100)


def tune_gc() -> None:
    """Set :data:`GC_THRESHOLDS`, and take what start-up allocated (modules, classes, settings:
    it lives as long as the process) out of every later collection (``gc.freeze``), so a full
    collection scans what the operator has read since, not the libraries it imported. Collected
    first, so no garbage is frozen. The caveat of ``gc.freeze`` (an object frozen while alive and
    left in a reference cycle later is never freed) concerns only what exists before Kopf
    starts, none of which the operator lets go of while it runs."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _param(option: Option) -> str:
    return option.path.replace(".", "__")  # the click parameter: "reconcile__workers"


def _click_type(option: Option) -> click.ParamType[Any]:
    if option.choices:
        return click.Choice(option.choices)
    if option.type is Path:
        return click.Path(path_type=Path)
    bounds = option.bounds
    if bounds is not None and option.type is int:
        low, high = (None if b is None else int(b) for b in (bounds.min, bounds.max))
        return click.IntRange(min=low, max=high)
    if bounds is not None and option.type is float:
        floor = bounds.min if bounds.above is None else bounds.above
        return click.FloatRange(min=floor, max=bounds.max, min_open=bounds.above is not None)
    return click.types.convert_type(option.type)


def _selected(groups: Collection[str] | None) -> list[Option]:
    """Every setting, or those of ``groups`` (``ferry serve`` reads a few groups only)."""
    return [option for option in options() if groups is None or option.group in groups]


def configure_logging(verbose: bool, *noisy: str) -> None:
    """Log lines with time, level and logger; without ``verbose``, the HTTP clients' and servers'
    (and ``noisy``) one line per request or handler call only from WARNING up: they drown what
    matters."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for name in (*noisy, "httpx2", "httpx", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


def options_of(groups: Collection[str]) -> Callable[[F], F]:
    """A decorator adding the options of ``groups`` only (a command that reads a few groups)."""
    return lambda command: settings_options(command, groups)


def settings_options(command: F, groups: Collection[str] | None = None) -> F:
    """Add one click option per setting that has one (credentials are environment only); only
    the settings of ``groups`` if given."""
    for option in reversed(_selected(groups)):
        if option.option is None:
            continue
        # click 8.5 takes an explicit ``default=None`` as a value: a required option has none.
        default = {} if option.required else {"default": option.default}
        command = click.option(
            option.option,
            _param(option),
            type=_click_type(option),
            envvar=option.env,
            show_envvar=True,
            required=option.required,
            multiple=option.multiple,
            show_default=option.default not in (None, ()),
            help=option.help.replace("``", ""),  # reStructuredText literals read as plain text
            **default,
        )(command)
    return command


def settings_from(
    params: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
    groups: Collection[str] | None = None,
    into: type[S] = Settings,  # type: ignore[assignment]
) -> S:
    """Settings from the parsed options (and the environment, for credentials); only those of
    ``groups`` if given, the others keep their defaults. ``into``: see
    :func:`ferry.settings.options.build`."""
    values: dict[str, Any] = {}
    for option in _selected(groups):
        if option.option is not None:
            values[option.path] = params[_param(option)]
        elif environ.get(option.env):
            values[option.path] = environ[option.env]
    try:
        return build(values, into)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


@click.command()
@settings_options
@click.option("--verbose", "-v", is_flag=True, help="Log every request and handler call.")
def run(verbose: bool, **params: Any) -> None:
    """Run the Ferry operator (Kopf) against the cluster in KUBECONFIG.

    Every option can also be set with the environment variable shown; docs/configuration.md
    lists them all.
    """
    settings = settings_from(params)
    import kopf

    import ferry.handlers  # noqa: F401 - registers the handlers

    configure_logging(verbose, "kopf.objects")
    # Set to stop the operator cleanly (the admission thread does, through the operator's loop,
    # if it fails). An asyncio.Event: Kopf waits for a threading.Event in an executor thread,
    # which the interpreter would then wait for forever after any other kind of stop.
    stop = asyncio.Event()
    tune_gc()
    kopf.run(
        clusterwide=True,
        standalone=True,
        stop_flag=stop,
        memo=kopf.Memo(settings=settings, stop=stop),
    )
