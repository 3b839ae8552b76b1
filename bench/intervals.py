"""How far one run can tell: bootstrap intervals for a benchmark's figures, and the verdict they
allow against a goal.

A p99 over a few hundred or thousand requests moves from run to run, on a two-core machine by
more than some goals' whole budget. So a figure compared with a goal is printed with its 95%
bootstrap interval (the samples resampled with replacement, the figure computed again each
time), and the goal is called met or not only when the whole interval lies on one side of it.

Within one run the samples share the machine's hour; on a shared VM the next hour can move a
figure by as much as the goal's margin (docs/benchmarks.md). :func:`across_runs` takes each
run's figure as one draw of that hour and gives the interval of their mean, so several runs of
the same code decide what no single one can. Command line, for figures read off runs:

    python bench/intervals.py --goal 1.2 1.21 1.13 1.17 1.10 1.08
"""

from __future__ import annotations

import argparse
import random
import statistics
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


def verdict(low: float, high: float, goal: float, by: str = "this run") -> str:
    """Whether an interval of a figure that must stay at or below ``goal`` says it does;
    ``by`` names what the interval comes from, for the undecided case."""
    if high <= goal:
        return "met"
    if low > goal:
        return "NOT met"
    return f"not decided by {by}: the interval holds the goal"


#: Student's t, the 97.5th percentile, by degrees of freedom (any statistics table; Python's
#: standard library has the normal distribution only). Past the table the next lower row is
#: used, which widens the interval a little: never in the goal's favour.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def across_runs(figures: Sequence[float]) -> tuple[float, float, float]:
    """The mean of one figure over several runs and its 95% interval (Student's t: the runs'
    figures taken as independent draws of the machine's hour). At least two runs."""
    if len(figures) < 2:
        raise ValueError("an interval across runs needs at least two runs")
    mean = statistics.fmean(figures)
    freedom = len(figures) - 1
    t = T_975[max(df for df in T_975 if df <= freedom)]
    half = t * statistics.stdev(figures) / len(figures) ** 0.5
    return mean, mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description="Interval of a figure's mean over several runs")
    parser.add_argument("--goal", type=float, required=True, help="the most the figure may be")
    parser.add_argument("figures", type=float, nargs="+", help="the figure of each run")
    args = parser.parse_args()
    mean, low, high = across_runs(args.figures)
    print(
        f"{len(args.figures)} runs: mean {mean:.3f}, 95% interval {low:.3f} … {high:.3f}; "
        f"goal <= {args.goal}: {verdict(low, high, args.goal, by='these runs')}"
    )


if __name__ == "__main__":
    main()
