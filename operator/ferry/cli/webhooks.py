"""`ferry webhooks`: the admission webhooks in a process of their own (ferry.handlers.admission).

Its options are the settings groups it reads (:class:`ferry.settings.AdmissionSettings`:
``kubernetes``, ``api``, ``webhooks``, ``validation``, ``vault``), generated like ``ferry run``'s.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from typing import Any

import click

from ferry.cli.run import configure_logging, options_of, settings_from, tune_gc
from ferry.settings import AdmissionSettings

#: The settings groups ``ferry webhooks`` reads.
GROUPS = tuple(group.name for group in fields(AdmissionSettings))


@click.command()
@options_of(GROUPS)
@click.option("--verbose", "-v", is_flag=True, help="Log at debug level.")
def webhooks(verbose: bool, **params: Any) -> None:
    """Answer Ferry's admission webhooks, reconciling nothing.

    The same checks and stamps as `ferry run --webhook-port`, in a process that a burst of
    reconciling cannot slow down: run it as a Deployment of its own behind the webhook Service,
    and `ferry run` without --webhook-port. Takes no Lease and needs neither PostgreSQL nor
    Redis; run several replicas.
    """
    settings = settings_from(params, groups=GROUPS, into=AdmissionSettings)
    if settings.webhooks.port is None:
        raise click.UsageError("set --webhook-port (FERRY_WEBHOOK_PORT): what else would it serve?")
    configure_logging(verbose)
    from ferry.handlers import admission

    tune_gc()
    asyncio.run(admission.run(settings))
