"""When the webhook's certificates are renewed, and which CAs the API server must trust meanwhile.

The operator keeps the admission webhook's CA and serving certificate in one Secret (decision
0022). Each check, the leader describes what the Secret holds (:class:`Held`) and :func:`plan`
says what to make; the adapter (``ferry.reconcile.certificates``) makes it and writes the Secret.

Order matters so that no admission request fails during a rotation:

1. A CA that is due is replaced by a new one, which joins the bundle *beside* the old one; the
   serving certificate, signed by the old CA, stays (still trusted).
2. The serving certificate is re-issued from the new CA only once that CA has been in the bundle
   for ``grace`` (the CA bundle has been injected and the API server has read it).
3. An old CA leaves the bundle once no certificate it signed has been served for ``grace`` (every
   replica has reloaded the new serving certificate), or when it expires.

Only facts go in (times and fingerprints); nothing here reads a certificate or a clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Facts:
    """One certificate, as far as renewal is concerned."""

    fingerprint: str
    issued_at: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True)
class Held:
    """What the Secret holds. ``ca`` is the CA whose private key the Secret also holds (None: no
    usable key, e.g. a Secret made by hand); ``serving`` is None when the serving certificate is
    missing, does not match its key, or does not name every host it must; ``serving_issuer`` is
    the fingerprint of the bundle's CA that signed it (None: none of them)."""

    bundle: tuple[Facts, ...] = ()
    ca: Facts | None = None
    serving: Facts | None = None
    serving_issuer: str | None = None


@dataclass(frozen=True)
class Policy:
    validity: dt.timedelta
    renew_before: dt.timedelta
    ca_validity: dt.timedelta
    ca_renew_before: dt.timedelta
    grace: dt.timedelta
    """How long a change takes to reach every reader: the API server (CA bundle) and every
    replica's webhook server (serving certificate)."""


@dataclass(frozen=True)
class Plan:
    new_ca: bool
    """Make a new CA (it becomes the current one and the first of the bundle)."""
    new_serving: bool
    """Issue a new serving certificate from the current CA (the new one if ``new_ca``)."""
    keep: tuple[str, ...]
    """Fingerprints of the CAs already held that stay in the bundle, in order."""

    @property
    def changes(self) -> bool:
        return self.new_ca or self.new_serving


def due(facts: Facts, renew_before: dt.timedelta, now: dt.datetime) -> bool:
    """Renewal is due ``renew_before`` ahead of expiry (and, of course, after it)."""
    return now >= facts.not_after - renew_before


def plan(held: Held, policy: Policy, now: dt.datetime) -> Plan:
    """What to make now; see the module docstring for the order."""
    ca = held.ca
    new_ca = ca is None or due(ca, policy.ca_renew_before, now)
    serving = held.serving
    trusted = {f.fingerprint for f in held.bundle if f.not_after > now}
    unusable = (
        serving is None or serving.not_after <= now or held.serving_issuer not in trusted
    )  # nothing works with it: replace it now, whatever CA that takes
    if unusable:
        new_serving = True
    elif new_ca:
        new_serving = False  # first the new CA is published (step 1)
    else:
        assert ca is not None and serving is not None
        wanted = due(serving, policy.renew_before, now) or held.serving_issuer != ca.fingerprint
        new_serving = wanted and now >= ca.issued_at + policy.grace  # step 2
    keep: list[str] = []
    if not new_ca and ca is not None:
        keep.append(ca.fingerprint)
    recent = serving is not None and now < serving.issued_at + policy.grace
    for facts in held.bundle:
        if facts.fingerprint in keep or facts.fingerprint not in trusted:
            continue
        if facts.fingerprint == held.serving_issuer:
            keep.append(facts.fingerprint)  # it signs what replicas serve until they reload
        elif recent:
            keep.append(facts.fingerprint)  # replicas may still serve what it signed (step 3)
    return Plan(new_ca=new_ca, new_serving=new_serving, keep=tuple(keep))


def serving_not_after(ca: Facts, validity: dt.timedelta, now: dt.datetime) -> dt.datetime:
    """A serving certificate never outlives the CA that signs it."""
    return min(now + validity, ca.not_after)


def bundle_stale(injected: str | None, desired: str) -> bool:
    """Whether an object's ``caBundle`` (base64 of PEM, as the API stores it) must be rewritten."""
    return (injected or "") != desired
