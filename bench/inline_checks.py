"""The worst an entry check answered on the admission thread itself can cost (decision 0027).

The admission webhooks answer an entry check inline, without a worker round trip, only when
``ferry.domain.admission.cheap_to_check`` says it is cheap whatever its content: at most
``CHEAP_VALUES`` values, ``CHEAP_CHARS`` characters and ``CHEAP_DEPTH`` levels (entry and
bases), a format among ``CHEAP_FORMATS``, and a flat schema (``ferry.domain.jsonschema.is_flat``)
within ``CHEAP_SCHEMA_*``. While one runs, no other admission request is answered, so its worst
case is how long one tenant can hold up another's answer (at most ``isolation.INLINE_SHARE`` of
each second in total).

Builds inputs at those bounds, each meant to be slow in its own way (the widest and deepest
data, the longest strings against patterns, the largest flat schema filled to the schema bounds,
every cheap format, with and without inheritance), checks that each is still classed cheap
(else it would go to a worker and tell nothing), and times ``check_entry`` on each, cold (a new
schema each time, compiled on the spot, nothing remembered: the first format of each input)
and warm. Floor beside them: the same check of the ordinary 10 KB, 50-property
entry of ``bench/admission_latency.py``, warm, as every apply after the first is.

Run: .venv/bin/python bench/inline_checks.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from admission_latency import entry_data, schema_body

from ferry.domain.admission import (
    CHEAP_CHARS,
    CHEAP_DEPTH,
    CHEAP_SCHEMA_CHARS,
    CHEAP_SCHEMA_VALUES,
    CHEAP_VALUES,
    cheap_to_check,
    check_entry,
)
from ferry.domain.jsonschema.split import MAX_FLAT_LIST, MAX_FLAT_SUBSCHEMAS

Case = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]  # spec, bases, schemas


def _string_schema(i: int) -> dict[str, Any]:
    return {
        "type": ["string", "null"],
        "pattern": f"^(a|b|c|[x-z]{{1,{i % 7 + 1}}})*$",
        "maxLength": CHEAP_CHARS,
        "enum": [f"v{j}" for j in range(MAX_FLAT_LIST - 1)] + ["x" * 8],
    }


def _size(value: Any) -> tuple[int, int]:
    """Values and characters, counted as ``cheap_to_check`` counts them."""
    values, chars, stack = 0, 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            values, chars = values + len(item), chars + sum(map(len, item))
            stack.extend(item.values())
        elif isinstance(item, list):
            values += len(item)
            stack.extend(item)
    return values, chars


def cases(salt: int) -> dict[str, Case]:
    """Inputs at the bounds; ``salt`` makes each schema new (nothing compiled or remembered)."""
    wide_keys = CHEAP_VALUES - 8  # the spec's own fields (schemaRef, target, ...) count too
    per = (CHEAP_CHARS - 2_000) // wide_keys
    widest_schema = {
        "type": "object",
        "$comment": f"salt {salt}",
        "required": [f"k{i:04}" for i in range(MAX_FLAT_LIST)],
        "properties": {f"k{i:04}": _string_schema(i) for i in range(MAX_FLAT_SUBSCHEMAS - 1)},
    }
    # Filled up to the schema's own bounds with what a flat schema may hold but never applies.
    used = _size(widest_schema)
    spare = min(CHEAP_SCHEMA_VALUES - used[0], (CHEAP_SCHEMA_CHARS - used[1]) // 2) - 2
    widest_schema["examples"] = ["e"] * spare
    wide = {f"k{i:04}": "z" * per for i in range(wide_keys)}
    deep: dict[str, Any] = {}
    node, node_schema = deep, {"type": "object", "$comment": f"salt {salt}", "properties": {}}
    deep_schema = node_schema
    for level in range(CHEAP_DEPTH - 2):  # the spec and its data are two levels
        child: dict[str, Any] = {"s": "y" * 200}
        node[f"n{level}"] = child
        sub = {"type": "object", "required": ["s"], "properties": {"s": _string_schema(level)}}
        node_schema["properties"][f"n{level}"] = sub
        node, node_schema = child, sub
    half = {f"k{i:04}": "z" * per for i in range(wide_keys // 2)}
    rest = {f"k{i:04}": "x" * per for i in range(wide_keys // 2, wide_keys - 6)}
    found: dict[str, Case] = {}
    for fmt in ("json", "env", "files"):
        target = {"format": fmt}
        found[f"widest data, largest schema, {fmt}"] = (
            {"schemaRef": {"name": "s"}, "target": target, "data": wide},
            {},
            {"s": {"schema": widest_schema}},
        )
        found[f"deepest data, {fmt}"] = (
            {"schemaRef": {"name": "s"}, "target": target, "data": deep},
            {},
            {"s": {"schema": deep_schema}},
        )
        found[f"half inherited, {fmt}"] = (
            {
                "schemaRef": {"name": "s"},
                "inherits": [{"name": "b"}],
                "target": target,
                "data": half,
            },
            {"b": {"data": rest}},
            {"s": {"schema": widest_schema}},
        )
    return found


def timed(case: Case, rounds: int) -> tuple[float, float]:
    """Best and worst milliseconds of ``rounds`` checks of ``case``."""
    spec, bases, schemas = case
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        check_entry("ns", "e", spec, bases, schemas)
        samples.append(time.perf_counter() - began)
    return min(samples) * 1000, max(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    ordinary: Case = (
        {"schemaRef": {"name": "s"}, "data": entry_data(1)},
        {},
        {"s": {"schema": schema_body()}},
    )
    assert cheap_to_check(*ordinary)
    timed(ordinary, 1)  # warm: compiled, its values remembered
    floor_best, floor_worst = timed(ordinary, 200)
    print(
        f"floor: the ordinary 10 KB entry, warm: best {floor_best:.2f} ms, "
        f"worst {floor_worst:.2f} ms of 200"
    )

    worst = 0.0
    for name in cases(0):
        cold: list[float] = []
        for salt in range(1, args.rounds + 1):
            case = cases(salt)[name]
            assert cheap_to_check(*case), f"{name} is not within the bounds"
            cold.append(timed(case, 1)[0])
        _, warm = timed(case, args.rounds)
        worst = max(worst, *cold, warm)
        print(
            f"  {name:<42} cold best {min(cold):6.2f} ms, worst {max(cold):6.2f} ms;"
            f" warm worst {warm:6.2f} ms"
        )
    print(
        f"worst inline check within the bounds: {worst:.2f} ms "
        f"({worst / floor_best:.0f}x the ordinary entry's {floor_best:.2f} ms)"
    )


if __name__ == "__main__":
    main()
