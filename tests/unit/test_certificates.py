"""When the webhook's CA and serving certificate are renewed, and which CAs stay trusted."""

from __future__ import annotations

import datetime as dt

import pytest

from ferry.domain.certificates import (
    Facts,
    Held,
    Policy,
    bundle_stale,
    due,
    plan,
    serving_not_after,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
POLICY = Policy(
    validity=90 * DAY,
    renew_before=30 * DAY,
    ca_validity=1000 * DAY,
    ca_renew_before=300 * DAY,
    grace=dt.timedelta(seconds=30),
)


def cert(name: str, issued_days_ago: float, expires_in_days: float) -> Facts:
    return Facts(name, NOW - issued_days_ago * DAY, NOW + expires_in_days * DAY)


CA = cert("ca", 100, 900)
SERVING = cert("serving", 10, 80)


def test_renewal_is_due_renew_before_ahead_of_expiry_and_after_it() -> None:
    assert not due(cert("c", 1, 31), 30 * DAY, NOW)
    assert due(cert("c", 1, 30), 30 * DAY, NOW)
    assert due(cert("c", 100, -1), 30 * DAY, NOW)


def test_an_empty_or_missing_secret_gets_a_ca_and_a_serving_certificate_at_once() -> None:
    decided = plan(Held(), POLICY, NOW)
    assert (decided.new_ca, decided.new_serving, decided.keep) == (True, True, ())


def test_nothing_changes_while_both_are_fresh() -> None:
    held = Held(bundle=(CA,), ca=CA, serving=SERVING, serving_issuer="ca")
    decided = plan(held, POLICY, NOW)
    assert not decided.changes
    assert decided.keep == ("ca",)


def test_a_serving_certificate_due_is_reissued_by_the_same_ca() -> None:
    held = Held(bundle=(CA,), ca=CA, serving=cert("serving", 70, 20), serving_issuer="ca")
    decided = plan(held, POLICY, NOW)
    assert (decided.new_ca, decided.new_serving, decided.keep) == (False, True, ("ca",))


def test_a_ca_due_is_published_beside_the_old_one_before_it_signs_anything() -> None:
    old = cert("old", 800, 200)
    held = Held(bundle=(old,), ca=old, serving=cert("serving", 70, 20), serving_issuer="old")
    decided = plan(held, POLICY, NOW)
    # Step 1: a new CA; the serving certificate (signed by the old CA) stays, and so does the old
    # CA in the bundle, even though the serving certificate itself is due.
    assert (decided.new_ca, decided.new_serving, decided.keep) == (True, False, ("old",))


def test_the_new_ca_signs_only_after_the_grace_period() -> None:
    old = cert("old", 800, 200)
    new = Facts("new", NOW - dt.timedelta(seconds=10), NOW + 1000 * DAY)
    serving = cert("serving", 70, 20)
    held = Held(bundle=(new, old), ca=new, serving=serving, serving_issuer="old")
    early = plan(held, POLICY, NOW)
    assert (early.new_serving, early.keep) == (False, ("new", "old"))
    later = plan(held, POLICY, NOW + dt.timedelta(seconds=30))
    assert (later.new_ca, later.new_serving, later.keep) == (False, True, ("new", "old"))


def test_the_old_ca_leaves_the_bundle_once_no_replica_can_still_serve_what_it_signed() -> None:
    old = cert("old", 800, 200)
    new = cert("new", 1, 999)
    fresh = Facts("serving", NOW - dt.timedelta(seconds=5), NOW + 90 * DAY)
    held = Held(bundle=(new, old), ca=new, serving=fresh, serving_issuer="new")
    assert plan(held, POLICY, NOW).keep == ("new", "old")
    assert plan(held, POLICY, NOW + dt.timedelta(seconds=30)).keep == ("new",)


def test_a_serving_certificate_signed_by_the_old_ca_is_replaced_even_when_not_due() -> None:
    old = cert("old", 800, 200)
    new = cert("new", 1, 999)
    held = Held(bundle=(new, old), ca=new, serving=SERVING, serving_issuer="old")
    decided = plan(held, POLICY, NOW)
    assert (decided.new_serving, decided.keep) == (True, ("new", "old"))


def test_a_secret_without_the_ca_key_gets_a_new_ca_and_keeps_trusting_the_old_one() -> None:
    chart_ca = cert("chart", 10, 3640)  # made by helm at install: the key is not in the Secret
    held = Held(bundle=(chart_ca,), ca=None, serving=SERVING, serving_issuer="chart")
    decided = plan(held, POLICY, NOW)
    assert (decided.new_ca, decided.new_serving, decided.keep) == (True, False, ("chart",))


@pytest.mark.parametrize(
    "held",
    [
        Held(bundle=(CA,), ca=CA, serving=None),  # missing, or does not match its key or hosts
        Held(bundle=(CA,), ca=CA, serving=cert("s", 91, -1), serving_issuer="ca"),  # expired
        Held(bundle=(CA,), ca=CA, serving=SERVING, serving_issuer=None),  # signed by a stranger
    ],
    ids=["missing", "expired", "untrusted"],
)
def test_an_unusable_serving_certificate_is_replaced_now_without_grace(held: Held) -> None:
    decided = plan(held, POLICY, NOW)
    assert (decided.new_ca, decided.new_serving, decided.keep) == (False, True, ("ca",))


def test_expired_cas_leave_the_bundle() -> None:
    gone = cert("gone", 1000, -1)
    held = Held(bundle=(CA, gone), ca=CA, serving=SERVING, serving_issuer="ca")
    assert plan(held, POLICY, NOW).keep == ("ca",)


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    assert serving_not_after(cert("ca", 1, 10), 90 * DAY, NOW) == NOW + 10 * DAY
    assert serving_not_after(CA, 90 * DAY, NOW) == NOW + 90 * DAY


def test_a_bundle_is_rewritten_when_missing_or_different() -> None:
    assert bundle_stale(None, "QUJD")
    assert bundle_stale("", "QUJD")
    assert bundle_stale("WFla", "QUJD")
    assert not bundle_stale("QUJD", "QUJD")
