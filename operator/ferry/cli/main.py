"""Entry point of the `ferry` command."""

from __future__ import annotations

import click

from ferry import __version__
from ferry.cli.dev import dev
from ferry.cli.flags import flags
from ferry.cli.history import COMMANDS as HISTORY_COMMANDS
from ferry.cli.history_api import history_api
from ferry.cli.run import run
from ferry.cli.serve import serve
from ferry.cli.validate import validate
from ferry.cli.webhooks import webhooks


@click.group()
@click.version_option(__version__, prog_name="ferry")
def cli() -> None:
    """Ferry: validated, versioned, audited configuration for Kubernetes workloads."""


cli.add_command(dev)
cli.add_command(flags)
cli.add_command(history_api)
cli.add_command(run)
cli.add_command(serve)
cli.add_command(validate)
cli.add_command(webhooks)
for _command in HISTORY_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli()
