"""Input a hostile tenant sends, shared by the unit and integration tests of issue 11."""

from __future__ import annotations

from typing import Any

#: Within the complexity budget (900 branches: fan-out under 1,000; a few thousand subschemas)
#: and quick to check, so admitted even with ``compatibility: Backward``; but about 10 ms of work
#: for each list item that matches no branch. Nothing in the schema alone says so.
COSTLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "anyOf": [{"type": "string", "pattern": f"^x{i}-[a-z]+$"} for i in range(900)]
            },
        }
    },
}


def costly_data(n: int = 0) -> dict[str, Any]:
    """About 15 KB, a different list for each ``n``: seconds of work against COSTLY_SCHEMA (over
    any per-call limit), nothing against a plain ``{"type": "object"}``."""
    return {"items": [f"nothing-matches-{n}-{i}" for i in range(1000)]}
