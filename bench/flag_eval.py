"""Evaluations per second of Ferry's pure flag evaluator, on one core.

The flag has three rules, the last one a percentage split, and the contexts are mixed so that
every rule decides some of the evaluations (a third reach the split and hash). Next to it, the
same run measures a floor: a loop doing only one MurmurHash3 and one dict lookup per iteration,
the least any evaluator that buckets must do, so the figure can be read on any machine.

Run: .venv/bin/python bench/flag_eval.py  (goal: >= 200,000 evaluations/s)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import mmh3

from ferry.domain.flags import evaluate, parse_flag

GOAL = 200_000
N = 300_000
REPEATS = 5

SPEC = {
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": [
        {
            "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
            "variant": "on",
        },
        {
            "when": [
                {"attribute": "plan", "op": "in", "values": ["enterprise", "pro"]},
                {"attribute": "appVersion", "op": "semverLt", "value": "2.0.0"},
            ],
            "variant": "off",
        },
        {
            "when": [{"attribute": "region", "op": "in", "values": ["eu-west-1", "eu-central-1"]}],
            "split": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
        },
    ],
}

CONTEXTS = [
    (f"user-{i}", ctx)
    for i in range(1000)
    for ctx in [
        [
            {"email": f"u{i}@example.com", "region": "us-east-1"},
            {"email": f"u{i}@corp.test", "plan": "pro", "appVersion": f"1.{i % 20}.0"},
            {"email": f"u{i}@corp.test", "plan": "free", "region": "eu-west-1"},
        ][i % 3]
    ]
]


def best_rate(loop: Callable[[int], None]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        loop(N)
        best = min(best, time.perf_counter() - start)
    return N / best


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    flag = parse_flag("new-checkout", SPEC)
    contexts = CONTEXTS
    m = len(contexts)

    def evaluator(n: int) -> None:
        for i in range(n):
            key, attrs = contexts[i % m]
            evaluate(flag, key, attrs)

    worst = [
        (key, {"email": "x@corp.test", "plan": "pro", "appVersion": "3.1.0", "region": "eu-west-1"})
        for key, _ in contexts
    ]

    def worst_path(n: int) -> None:
        for i in range(n):
            key, attrs = worst[i % m]
            evaluate(flag, key, attrs)

    table = {"on": True, "off": False}
    keys = [("new-checkout" + k, "on" if i % 2 else "off") for i, (k, _) in enumerate(contexts)]

    def floor(n: int) -> None:
        for i in range(n):
            key, variant = keys[i % m]
            mmh3.hash(key, 0, False)
            table[variant]

    reasons: dict[str, int] = {}
    for key, attrs in contexts:
        r = evaluate(flag, key, attrs).reason
        reasons[str(r)] = reasons.get(str(r), 0) + 1

    rate, worst_rate, floor_rate = best_rate(evaluator), best_rate(worst_path), best_rate(floor)
    print("flag: 3 rules (endsWith; in + semverLt; in -> 25/75 split), single core")
    print(f"reasons over the context mix: {dict(sorted(reasons.items()))}")
    print(f"evaluator       : {rate:>12,.0f} evaluations/s  ({1e6 / rate:.2f} us each)")
    print(f"evaluator, every call tests all 3 rules and hashes: {worst_rate:,.0f} evaluations/s")
    print(
        f"floor (mmh3+dict): {floor_rate:>11,.0f} iterations/s   ({1e6 / floor_rate:.2f} us each)"
    )
    print(f"evaluator / floor: {rate / floor_rate:.2f}")
    print(f"goal {GOAL:,}/s: {'met' if min(rate, worst_rate) >= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
