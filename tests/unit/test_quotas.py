"""RunQuota accounting: what grew since the last look is counted once (an operator restart recounts nothing, a
deleted run frees nothing), another currency's cost is not, a new period starts from zero keeping the running
runs' watermarks; a spent quota holds its namespace's new runs, naming itself; maxRunning folds into the limit."""
from datetime import datetime, timezone

from kubechain.api.v1alpha1 import QuotaPeriod, RunQuotaSpec, RunQuotaStatus
from kubechain.core.queueing import Limits, Queued, plan, why_queued
from kubechain.core.quotas import RunSpend, account, period_start
from kubechain.operator.controllers.taskrun.queue import quota_limits

NOW = datetime(2026, 12, 1, 18, 30, tzinfo=timezone.utc)
SPEC = RunQuotaSpec(namespace="team", max_tokens=1000, max_cost=1.0, currency="EUR")


def spend(uid: str, tokens: int, cost: float | None = None, currency: str = "EUR", ended: bool = False):
    return RunSpend(uid, tokens, cost, currency, ended, running=not ended)


def test_growth_is_counted_once_and_a_restart_or_a_deletion_changes_nothing():
    first = account("q", SPEC, RunQuotaStatus(), [spend("a", 300, 0.1), spend("b", 200)], NOW)
    assert (first.used_tokens, first.used_cost, first.running, first.exceeded) == (500, 0.1, 2, False)
    again = account("q", SPEC, first, [spend("a", 300, 0.1), spend("b", 200)], NOW)  # a restart reads the status
    assert again.used_tokens == 500
    grown = account("q", SPEC, again, [spend("a", 700, 0.2, ended=True)], NOW)  # b deleted: still counted
    assert grown.used_tokens == 900 and grown.used_cost == 0.2 and "b" in grown.counted
    other = account("q", SPEC, grown, [spend("a", 700, 0.2, ended=True), spend("c", 50, 5.0, "USD")], NOW)
    assert other.used_tokens == 950 and other.used_cost == 0.2  # its tokens count, its dollars do not


def test_a_spent_quota_says_what_and_until_when():
    spent = account("team-daily", SPEC, RunQuotaStatus(), [spend("a", 1200)], NOW)
    assert spent.exceeded and spent.message == ("RunQuota team-daily: 1200 of 1000 tokens used this day; new runs of "
                                                "namespace team wait until 2026-12-02T00:00:00Z")


def test_a_new_period_starts_from_zero_and_keeps_the_running_runs_watermarks():
    before = account("q", SPEC, RunQuotaStatus(), [spend("a", 900), spend("b", 300, ended=True)],
                     datetime(2026, 11, 30, 23, 59, tzinfo=timezone.utc))
    assert before.exceeded
    after = account("q", SPEC, before, [spend("a", 950), spend("b", 300, ended=True)], NOW)
    assert after.used_tokens == 50 and not after.exceeded and set(after.counted) == {"a", "b"}
    assert after.period_start == "2026-12-01T00:00:00Z"
    later = account("q", SPEC, after, [spend("a", 950)], NOW.replace(day=2))  # b ended and gone: dropped
    assert set(later.counted) == {"a"} and later.used_tokens == 0


def test_periods_start_on_calendar_boundaries():
    assert period_start(QuotaPeriod.HOUR, NOW) == NOW.replace(minute=0)
    assert period_start(QuotaPeriod.WEEK, NOW) == datetime(2026, 11, 30, tzinfo=timezone.utc)  # a Monday
    assert period_start(QuotaPeriod.MONTH, NOW) == datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_a_spent_quota_holds_its_namespace_only_and_max_running_is_named():
    overrides = {"other": 5}
    held, sources = quota_limits({"team": [("q", 1, "RunQuota q: spent")], "other": [("r", 2, "")]}, overrides, 10)
    limits = Limits(10, 10, tuple(overrides.items()), held=held, sources=sources)
    queued = [Queued("team", "t1", 0, "1"), Queued("other", "o1", 0, "2")]
    slots = {s.run.name: s.admitted for s in plan(queued, {}, limits)}
    assert slots == {"t1": False, "o1": True}
    assert why_queued("team", {}, limits) == "RunQuota q: spent"
    assert why_queued("other", {"other": 2}, limits) == "namespace limit: 2 of 2 running (RunQuota r maxRunning)"


def test_while_spent_a_users_new_runs_are_refused_and_the_operators_queue():
    from kubechain.core.admission import quota

    spent = ["RunQuota q: 1200 of 1000 tokens used this day; new runs of namespace team wait until tomorrow"]
    assert quota({"metadata": {}}, "CREATE", spent) == [f"refused: {spent[0]}"]
    owned = {"metadata": {"ownerReferences": [{"kind": "Task", "name": "t", "uid": "u"}]}}
    assert quota(owned, "CREATE", spent) == []  # a Task's, a schedule's or a delegation's run: it queues
    assert quota({"metadata": {}}, "UPDATE", spent) == [] and quota({"metadata": {}}, "CREATE", []) == []
