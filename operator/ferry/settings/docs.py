"""The operator-settings tables in docs/configuration.md, generated from :mod:`ferry.settings`.

Only the part between the two markers is generated; the prose around it is edited by hand.
``python -m ferry.settings.docs --write`` rewrites that part; tests/unit/test_settings.py fails
while the file and the code differ.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from ferry.settings import Settings
from ferry.settings.base import PORT, POSITIVE, SECONDS, hints
from ferry.settings.options import Option, options

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
BEGIN = (
    "<!-- BEGIN generated from operator/ferry/settings/__init__.py: edit the docstrings there,"
    " then run `python -m ferry.settings.docs --write` -->"
)
END = "<!-- END generated -->"


def render() -> str:
    """The generated block, markers included."""
    lines = [BEGIN]
    by_group: dict[str, list[Option]] = {}
    for option in options():
        by_group.setdefault(option.group, []).append(option)
    for group in fields(Settings):
        cls = hints(Settings)[group.name]
        lines += ["", f"### `{group.name}`", "", _markdown(cls.__doc__ or ""), ""]
        lines += ["| option | environment variable | type | default | meaning |"]
        lines += ["|---|---|---|---|---|"]
        for option in by_group[group.name]:
            flag = f"`{option.option}`" if option.option else "(none)"
            cells = (flag, f"`{option.env}`", _type(option), _default(option), option.help)
            lines.append("| " + " | ".join(_markdown(cell) for cell in cells) + " |")
    lines += ["", END]
    return "\n".join(lines)


def update(text: str) -> str:
    """``text`` with its generated block replaced by :func:`render`'s."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing")
    return text[:start] + render() + text[end + len(END) :]


def _markdown(text: str) -> str:
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def _type(option: Option) -> str:
    if option.choices:
        kind = " or ".join(f"`{choice}`" for choice in option.choices)
    elif option.bounds == PORT:
        kind = "port"
    elif (
        option.bounds is not None and option.bounds.above == SECONDS.above and option.type is float
    ):
        top = option.bounds.max
        kind = "seconds" if top is None else f"seconds, at most {top:g}"
    elif option.type is int:
        kind = "integer ≥ 1" if option.bounds == POSITIVE else "integer"
    else:
        kind = {str: "text", float: "number", Path: "path"}[option.type]
    return f"list of {kind}" if option.multiple else kind


def _default(option: Option) -> str:
    value: Any = option.default
    if value is MISSING:
        return "**required**"
    if value is None:
        return "unset"
    if option.multiple:
        return " ".join(f"`{item}`" for item in value) or "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry.settings.docs", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite {DOC}")
    parser.add_argument(
        "--file", type=Path, default=DOC, help="the document (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    current = args.file.read_text()
    wanted = update(current)
    if args.write:
        if wanted != current:
            args.file.write_text(wanted)
        return 0
    sys.stdout.write(render() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
