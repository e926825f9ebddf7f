"""What a RunQuota has counted and whether it holds new runs back: a pure function of its spec, its last status,
what the namespace's runs have spent and the time (no I/O), applied by kubechain/operator/controllers/quota.py.

Each run's own usage and cost (its status.usage/cost: a delegated run is a run of the namespace too, so tree
totals would count it twice) grow step by step. The quota counts what grew since it last looked, remembered per
run in its status (`counted`), so an operator restart counts nothing again and deleting a run frees nothing. At a
new period the used totals start from zero; the runs still there keep their watermark (what they spent before
counts in the period it was spent in), deleted runs are dropped from `counted`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from kubechain.api.v1alpha1 import QuotaPeriod, RunQuotaSpec, RunQuotaStatus
from kubechain.api.v1alpha1.quota import Counted


@dataclass(frozen=True)
class RunSpend:
    """One TaskRun of the namespace, as the operator last saw it."""

    uid: str
    tokens: int
    cost: float | None
    currency: str | None
    ended: bool
    running: bool  # holds an actor now (phase Running)


def period_start(period: QuotaPeriod, now: datetime) -> datetime:
    now = now.astimezone(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    match period:
        case QuotaPeriod.HOUR:
            return now.replace(minute=0, second=0, microsecond=0)
        case QuotaPeriod.DAY:
            return day
        case QuotaPeriod.WEEK:
            return day - timedelta(days=day.weekday())
        case QuotaPeriod.MONTH:
            return day.replace(day=1)


def next_start(period: QuotaPeriod, start: datetime) -> datetime:
    match period:
        case QuotaPeriod.HOUR:
            return start + timedelta(hours=1)
        case QuotaPeriod.DAY:
            return start + timedelta(days=1)
        case QuotaPeriod.WEEK:
            return start + timedelta(days=7)
        case QuotaPeriod.MONTH:
            return (start + timedelta(days=32)).replace(day=1)


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def account(name: str, spec: RunQuotaSpec, status: RunQuotaStatus, runs: list[RunSpend],
            now: datetime) -> RunQuotaStatus:
    start = period_start(spec.period, now)
    used_tokens, used_cost, counted = status.used_tokens, status.used_cost, dict(status.counted)
    if status.period_start != _rfc3339(start):  # a new period
        alive = {r.uid for r in runs}  # a run still there keeps its watermark: it is never counted again
        used_tokens, used_cost = 0, 0.0
        counted = {uid: c for uid, c in counted.items() if uid in alive}
    for run in runs:
        before = counted.get(run.uid) or Counted()
        cost = run.cost if run.cost is not None and run.currency == spec.currency else 0.0
        used_tokens += max(run.tokens - before.tokens, 0)
        used_cost += max(cost - before.cost, 0.0)
        counted[run.uid] = Counted(tokens=max(run.tokens, before.tokens), cost=max(cost, before.cost),
                                   ended=run.ended)
    spent = []
    if spec.max_tokens is not None and used_tokens >= spec.max_tokens:
        spent.append(f"{used_tokens} of {spec.max_tokens} tokens")
    if spec.max_cost is not None and used_cost >= spec.max_cost:
        spent.append(f"{used_cost:.6g} of {spec.max_cost:g} {spec.currency}")
    message = (f"RunQuota {name}: {' and '.join(spent)} used this {spec.period.value.lower()}; new runs of "
               f"namespace {spec.namespace} wait until {_rfc3339(next_start(spec.period, start))}") if spent else ""
    return RunQuotaStatus(period_start=_rfc3339(start), used_tokens=used_tokens, used_cost=round(used_cost, 9),
                          running=sum(r.running for r in runs), exceeded=bool(spent), message=message,
                          counted=counted)
