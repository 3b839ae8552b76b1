"""`ferry dev up|down|env`: a full local Ferry for a person, in the background."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import click

from ferry.devenv.process import StartupError
from ferry.devenv.stack import REPO_ROOT, Stack, start_stack

DEV_DIR = Path(os.environ.get("FERRY_DEV_DIR", REPO_ROOT / ".ferry" / "dev"))
STATE_FILE = DEV_DIR / "state.json"


def _load() -> Stack | None:
    if not STATE_FILE.exists():
        return None
    try:
        return Stack.load(STATE_FILE)
    except (ValueError, KeyError, OSError):
        return None


@click.group()
def dev() -> None:
    """Run a local control plane, PostgreSQL, Redis, Vault and the operator (.ferry/dev/)."""


@dev.command()
@click.option(
    "--operator/--no-operator",
    default=True,
    help="Also run the operator and its webhooks (`ferry webhooks`) from this tree.",
)
@click.option(
    "--vault/--no-vault",
    default=True,
    help="Also run a Vault dev server (secretData); its first build takes minutes.",
)
def up(operator: bool, vault: bool) -> None:
    """Start the local stack; does nothing if it is already running."""
    stack = _load()
    if stack is not None and stack.alive():
        click.echo(f"ferry dev: already up (state in {STATE_FILE})", err=True)
        return
    if stack is not None:
        click.echo("ferry dev: found a partly stopped stack; stopping what is left", err=True)
        stack.stop()
    shutil.rmtree(DEV_DIR, ignore_errors=True)
    try:
        stack = start_stack(DEV_DIR, with_operator=operator, with_vault=vault)
    except StartupError as exc:
        click.echo(f"ferry dev up: {exc}", err=True)
        sys.exit(1)
    stack.save(STATE_FILE)
    click.echo(f'ferry dev: up; run `eval "$(ferry dev env)"` (state in {STATE_FILE})', err=True)


@dev.command()
def down() -> None:
    """Stop exactly the processes `ferry dev up` started and remove their state."""
    stack = _load()
    if stack is None:
        click.echo("ferry dev: nothing to stop", err=True)
        return
    stack.stop()
    shutil.rmtree(DEV_DIR, ignore_errors=True)
    click.echo("ferry dev: down", err=True)


@dev.command()
def env() -> None:
    """Print shell exports for the running stack: eval "$(ferry dev env)".

    KUBECONFIG, KUBECACHEDIR (kubectl's cache, removed with the stack), FERRY_DATABASE_URL,
    FERRY_REDIS_URL and, with Vault, VAULT_ADDR and VAULT_TOKEN;
    kubectl (and vault) on PATH.
    """
    stack = _load()
    if stack is None:
        click.echo("ferry dev: not up; run `ferry dev up` first", err=True)
        sys.exit(1)
    tools = ":".join(str(d) for d in [stack.kubectl.parent, *stack.bin_dirs])
    variables = {**stack.env(), "PATH": f"{tools}:$PATH"}
    exports = " ".join(
        f"{k}={shlex.quote(v)}" if k != "PATH" else f'{k}="{v}"' for k, v in variables.items()
    )
    click.echo(f"export {exports}")
