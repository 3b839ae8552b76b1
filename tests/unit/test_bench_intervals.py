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
