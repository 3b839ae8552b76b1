"""Violations: how every check in Ferry reports bad input.

A violation names the field by the JSON path a user sees in `kubectl` (``spec.data.db.poolSize``)
and says what is wrong with it. Checks collect every violation rather than stopping at the first,
so one `kubectl apply` shows the whole list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Invalid(Exception):
    """Raised by domain functions when input cannot be turned into configuration.

    ``reason`` is a CamelCase word suitable for a condition reason or an Event reason.
    """

    def __init__(self, reason: str, violations: Iterable[Violation]) -> None:
        self.reason = reason
        self.violations = sorted(violations)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "; ".join(str(v) for v in self.violations)


_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


def field_path(prefix: str, parts: Iterable[str | int]) -> str:
    """Spell a location inside a document the way a user would type it after ``kubectl get -o``.

    Keys that read as identifiers join with a dot (``spec.data.db.poolSize``; ``-`` and ``$`` are
    allowed because Kubernetes keys and JSON Schema keywords use them and neither is ambiguous);
    array indices are bracketed (``items[2]``); any other key is quoted as a JSON string
    (``spec.data["a.b"]``), so dots, spaces, NUL or unicode inside a key can never be mistaken for
    structure.
    """
    out = [prefix]
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(f"[{part}]")
        elif isinstance(part, str) and _IDENTIFIER.fullmatch(part):
            out.append(f".{part}" if out != [""] else part)
        else:
            out.append(f"[{json.dumps(str(part), ensure_ascii=False)}]")
    return "".join(out)
