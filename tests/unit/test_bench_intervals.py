"""bench/intervals.py decides goals from benchmark figures; its arithmetic is checked here by
hand-computed cases (the benchmarks themselves are not part of `make test`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_intervals", Path(__file__).parents[2] / "bench" / "intervals.py"
)
assert _SPEC and _SPEC.loader
intervals = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(intervals)


def test_the_interval_across_runs_is_students_t_over_the_runs_figures() -> None:
    # mean 2, sample standard deviation 1, three runs: t(0.975, 2) = 4.303.
    mean, low, high = intervals.across_runs([1.0, 2.0, 3.0])
    half = 4.303 / 3**0.5
    assert mean == pytest.approx(2.0)
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half))


def test_between_rows_of_the_table_the_wider_interval_is_taken() -> None:
    figures = [1.0, 1.1] * 7  # 14 runs: 13 degrees of freedom, not in the table; 12's row
    mean, _, high = intervals.across_runs(figures)
    sd = (sum((f - 1.05) ** 2 for f in figures) / 13) ** 0.5
    assert high - mean == pytest.approx(2.179 * sd / 14**0.5)
    assert high - mean > 2.160 * sd / 14**0.5  # what t(0.975, 13) would give


def test_one_run_gives_no_interval_across_runs() -> None:
    with pytest.raises(ValueError, match="at least two runs"):
        intervals.across_runs([1.1])


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        ([1.04, 1.08, 1.10, 1.21, 1.13], "met"),
        ([1.30, 1.35, 1.40], "NOT met"),
        ([1.0, 1.4], "not decided by these runs: the interval holds the goal"),
    ],
)
def test_the_verdict_follows_the_interval_against_the_goal(
    figures: list[float], expected: str
) -> None:
    _, low, high = intervals.across_runs(figures)
    assert intervals.verdict(low, high, 1.2, by="these runs") == expected


def test_the_bootstrap_interval_leaves_two_and_a_half_percent_of_resamples_on_each_side() -> None:
    # A "figure" that counts its calls: the 40 resampled figures are 0..39 whatever is drawn,
    # so the interval is the 2nd-lowest and the 2nd-highest (1 of 40 = 2.5 % on each side).
    calls = iter(range(40))
    low, high = intervals.interval(
        lambda _: float(next(calls)), [1.0, 2.0], paired=False, resamples=40
    )
    assert (low, high) == (1.0, 38.0)


def test_paired_samples_are_resampled_together() -> None:
    # The second list is the first plus one, sample by sample: resampled in pairs, the
    # difference of the means is exactly one in every resample; resampled apart, it spreads.
    first = [float(i) for i in range(100)]
    second = [x + 1 for x in first]

    def difference(a: list[float], b: list[float]) -> float:
        return sum(b) / len(b) - sum(a) / len(a)

    assert intervals.interval(difference, first, second, paired=True) == pytest.approx((1.0, 1.0))
    low, high = intervals.interval(difference, first, second, paired=False)
    assert low < 0 < 2 < high


def test_paired_samples_must_be_of_one_length() -> None:
    with pytest.raises(ValueError, match="same length"):
        intervals.interval(lambda a, b: 0.0, [1.0], [1.0, 2.0], paired=True)
