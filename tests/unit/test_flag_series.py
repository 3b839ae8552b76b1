"""ferry.api.metrics.FlagSeries: flag evaluations by flag and variant, with bounded labels."""

from __future__ import annotations

from ferry.api.metrics import OTHER, FlagSeries


def test_flags_past_the_limit_and_variants_past_theirs_count_as_other() -> None:
    series = FlagSeries(limit=2, variants=2)
    assert series.labels("a", "one", "on") == ("a/one", "on")
    assert series.labels("b", "two", None) == ("b/two", "")  # no variant: error or disabled
    assert series.labels("c", "three", "on") == (OTHER, OTHER)  # a third flag
    assert series.labels("a", "one", "off") == ("a/one", "off")
    assert series.labels("a", "one", "blue") == ("a/one", OTHER)  # a third variant
    assert series.labels("a", "one", "on") == ("a/one", "on")  # known ones keep their series


def test_the_default_keeps_flag_names_off_metrics() -> None:
    assert FlagSeries(limit=0).labels("tenant", "secret-project", "on") == (OTHER, OTHER)
