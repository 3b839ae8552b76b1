"""How far one run can tell: bootstrap intervals for a benchmark's figures, and the verdict they
allow against a goal.

A p99 over a few hundred or thousand requests moves from run to run, on a two-core machine by
more than some goals' whole budget. So a figure compared with a goal is printed with its 95%
bootstrap interval (the samples resampled with replacement, the figure computed again each
time), and the goal is called met or not only when the whole interval lies on one side of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

#: Resamples per interval: enough for the 2.5th and 97.5th percentiles to settle (seeded, so
#: the same samples give the same interval).
RESAMPLES = 2000


def interval(
    figure: Callable[..., float],
    *samples: Sequence[float],
    paired: bool,
    resamples: int = RESAMPLES,
) -> tuple[float, float]:
    """95% bootstrap interval of ``figure(*samples)``. ``paired``: the i-th sample of each list
    was taken together (one round of interleaved requests), so indices are resampled together;
    otherwise each list is resampled on its own."""
    rng = random.Random(0)
    if paired and len({len(s) for s in samples}) != 1:
        raise ValueError("paired samples must have the same length")
    values = []
    for _ in range(resamples):
        if paired:
            picked = rng.choices(range(len(samples[0])), k=len(samples[0]))
            drawn = [[s[i] for i in picked] for s in samples]
        else:
            drawn = [rng.choices(s, k=len(s)) for s in samples]
        values.append(figure(*drawn))
    values.sort()
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


def verdict(low: float, high: float, goal: float) -> str:
    """Whether an interval of a figure that must stay at or below ``goal`` says it does."""
    if high <= goal:
        return "met"
    if low > goal:
        return "NOT met"
    return "not decided by this run: the interval holds the goal"
