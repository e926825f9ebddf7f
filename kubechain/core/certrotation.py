"""When the webhook certificate is rotated, and how, so that no request is refused on the way.

The Secret every replica uses holds the serving certificate and the CA bundle the apiserver trusts (the
caBundle of the webhook configurations and of the CRDs' conversion); each rotation brings a new CA with a new
certificate, never a CA key to keep. The steps, each taken by whichever replica sees it due first (an update
with the resourceVersion it read: of two, one writes), each at least `overlap` after the bundle last changed:

1. STAGE at two thirds of the certificate's life (or once it has expired): a new CA and certificate are stored
   beside the current ones, and the bundle trusts both. Servers still present the current certificate.
2. PROMOTE: the new certificate becomes the one served (every replica loads it within its check interval);
   the bundle still trusts both, so a replica that has not loaded it yet is still trusted.
3. TRIM: the bundle trusts only the new CA.

`overlap` must exceed the time every replica takes to see a step and the apiserver to pick up a changed webhook
configuration; an expired certificate is promoted at once (nothing is gained by waiting then).
"""
from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

RENEW_AT = 2 / 3  # of the lifetime, as cert-manager renews


class Step(enum.Enum):
    KEEP = "keep"
    STAGE = "stage"
    PROMOTE = "promote"
    TRIM = "trim"


@dataclass(frozen=True)
class Bundle:
    """What the plan is made from."""
    not_before: datetime.datetime
    not_after: datetime.datetime
    """The served certificate's validity."""
    staged: bool
    """A new CA and certificate wait beside the served ones (step 1 done, not 2)."""
    trusted_cas: int
    """CAs in the bundle."""
    changed_at: datetime.datetime
    """When the bundle or the served certificate last changed."""


def plan(bundle: Bundle, now: datetime.datetime, overlap: datetime.timedelta) -> Step:
    settled = now >= bundle.changed_at + overlap
    if bundle.staged:
        return Step.PROMOTE if settled or now >= bundle.not_after else Step.KEEP
    if bundle.trusted_cas > 1:
        return Step.TRIM if settled else Step.KEEP
    renew_at = bundle.not_before + (bundle.not_after - bundle.not_before) * RENEW_AT
    return Step.STAGE if now >= renew_at else Step.KEEP
