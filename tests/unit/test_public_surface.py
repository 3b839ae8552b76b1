"""The public surface of the `ferry` package, pinned: the CLI's commands and options, and the
packages a newcomer (or a user's script) imports.

A change here is a change users see. If it is deliberate, regenerate the pin and say so in the
commit: `.venv/bin/python tests/unit/test_public_surface.py > tests/unit/public_surface.json`.
"""

from __future__ import annotations

import json
import pkgutil
from pathlib import Path
from typing import Any

import click

import ferry
from ferry.cli.main import cli

PIN = Path(__file__).with_name("public_surface.json")


def _commands(command: click.Command, prefix: str = "") -> dict[str, list[str]]:
    name = f"{prefix} {command.name}".strip()
    out = {name: sorted(o for p in command.params for o in [*p.opts, *p.secondary_opts])}
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            out.update(_commands(sub, name))
    return dict(sorted(out.items()))


def surface() -> dict[str, Any]:
    packages = sorted(
        m.name for m in pkgutil.iter_modules(ferry.__path__, "ferry.") if not m.name.startswith("_")
    )
    return {"packages": packages, "cli": _commands(cli, "")}


def test_public_surface_is_pinned() -> None:
    assert surface() == json.loads(PIN.read_text()), (
        "the public surface changed; if on purpose, regenerate the pin (see this module's doc)"
    )


if __name__ == "__main__":
    print(json.dumps(surface(), indent=2))
