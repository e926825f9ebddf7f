"""Leader election over a coordination.k8s.io/v1 Lease, with client-go's semantics, as pure functions.

1. A candidate may take the Lease when nobody holds it (absent, or released: holderIdentity empty), when it holds it
   itself, or when the holder has not renewed for leaseDurationSeconds *as this candidate observed it*: the clock
   is the candidate's own monotonic time of first seeing the record as it is now, never the holder's renewTime,
   so skewed clocks between nodes cannot shorten the wait.
2. Taking and renewing are one update carrying the resourceVersion read: of two candidates racing, the
   apiserver lets one write (409 for the other).
3. The holder renews every retry period; one that has not renewed within the renew deadline (less than the
   lease duration) stops reconciling before any other candidate may take over.
4. A holder that stops cleanly releases: holderIdentity empty and a 1 s duration, so a standby takes over at its
   next try instead of a whole lease duration later.

The I/O (reading, writing the Lease, timers) is kubechain/operator/leader.py.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Record:
    """The Lease's spec, as it matters for the election."""
    holder: str
    """holderIdentity; "" when released."""
    duration_seconds: int
    """leaseDurationSeconds the holder asked the others to wait."""
    acquire_time: str
    """When the current holder took it (RFC 3339, microseconds)."""
    renew_time: str
    """When the holder last renewed: the record changes at each renewal, which is what candidates watch."""
    transitions: int
    """leaseTransitions: how many times the holder changed."""

    @classmethod
    def from_spec(cls, spec: dict) -> "Record":
        return cls(holder=spec.get("holderIdentity") or "", duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime") or "", renew_time=spec.get("renewTime") or "",
                   transitions=int(spec.get("leaseTransitions") or 0))

    def to_spec(self) -> dict:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time, "leaseTransitions": self.transitions}


@dataclass(frozen=True)
class Observed:
    """A record and the monotonic time this candidate first saw it as it is (client-go's observedTime)."""
    record: Record | None
    since: float


def observe(previous: Observed | None, record: Record | None, now: float) -> Observed:
    """The observation after reading `record` at `now`: its clock restarts only when the record changed."""
    if previous is not None and previous.record == record:
        return previous
    return Observed(record, now)


def may_take(observed: Observed, identity: str, now: float) -> bool:
    """Rule 1."""
    record = observed.record
    if record is None or not record.holder or record.holder == identity:
        return True
    return now >= observed.since + record.duration_seconds


def claimed(record: Record | None, identity: str, at: str, duration_seconds: float) -> Record:
    """The record that takes (or renews) the Lease for `identity` at wall time `at`."""
    if record is not None and record.holder == identity:
        return replace(record, renew_time=at, duration_seconds=int(duration_seconds))
    transitions = record.transitions + 1 if record is not None and record.holder else (record.transitions if record else 0)
    return Record(holder=identity, duration_seconds=int(duration_seconds), acquire_time=at, renew_time=at,
                  transitions=transitions)


def released(record: Record, at: str) -> Record:
    """Rule 4."""
    return replace(record, holder="", duration_seconds=1, renew_time=at)
