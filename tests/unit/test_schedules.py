"""TaskSchedule's plan: due times in a time zone, the latest of several missed ones started late (once), the
starting deadline, suspend, the three concurrency policies, a due time never started twice, history limits; and
the spec's checks naming the field."""
from datetime import datetime, timezone

import pytest

from kubechain.api.v1alpha1 import Phase, TaskScheduleSpec, TaskScheduleStatus
from kubechain.core.resolve import parse
from kubechain.core.schedules import ScheduledRun, plan, run_name

UTC = timezone.utc
CREATED = datetime(2026, 12, 1, 9, 59, 30, tzinfo=UTC)


def spec(**extra) -> TaskScheduleSpec:
    return TaskScheduleSpec.model_validate({"schedule": "*/10 * * * *", "runTemplate": {
        "agentRef": {"name": "a"}, "userInput": "report"}, **extra})


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 12, 1, hour, minute, second, tzinfo=UTC)


def run(due: datetime, phase: Phase = Phase.RUNNING, finished: datetime | None = None) -> ScheduledRun:
    return ScheduledRun(run_name("nightly", due), due, phase, finished)


def decide(s: TaskScheduleSpec, now: datetime, last: datetime | None = None, runs=()) -> object:
    status = TaskScheduleStatus(last_schedule_time=last.strftime("%Y-%m-%dT%H:%M:%SZ") if last else None)
    return plan("nightly", s, status, list(runs), CREATED, now)


def test_nothing_is_due_before_the_first_time():
    p = decide(spec(), at(9, 59, 50))
    assert p.start is None and p.events == () and p.status.next_schedule_time == "2026-12-01T10:00:00Z"
    assert p.wake == at(10, 0)


def test_a_due_time_starts_one_run_named_after_it():
    p = decide(spec(), at(10, 0, 3))
    assert p.start == at(10, 0) and p.status.last_schedule_time == "2026-12-01T10:00:00Z"
    assert p.status.active == [run_name("nightly", at(10, 0))] == [f"nightly-{int(at(10, 0).timestamp())}"]
    assert [e[1] for e in p.events] == ["RunStarted"] and p.status.next_schedule_time == "2026-12-01T10:10:00Z"


def test_a_due_time_decided_once_is_never_started_again():
    assert decide(spec(), at(10, 5), last=at(10, 0)).start is None
    # The run was created but the status write that says so was lost: the run is found, not started again.
    again = decide(spec(), at(10, 0, 9), runs=[run(at(10, 0))])
    assert again.start is None and again.status.last_schedule_time == "2026-12-01T10:00:00Z" and again.events == ()


def test_after_an_outage_only_the_latest_missed_time_starts_and_the_others_are_counted():
    p = decide(spec(), at(10, 41), last=at(10, 0))
    assert p.start == at(10, 40)
    assert ("Warning", "MissedSchedule", "3 scheduled time(s) before 2026-12-01T10:40:00Z passed without a run "
            "(the operator was not running)") in p.events


def test_past_the_starting_deadline_a_run_is_missed_not_started_late():
    p = decide(spec(startingDeadlineSeconds=60), at(10, 2), last=at(9, 50))
    assert p.start is None and p.status.last_schedule_time == "2026-12-01T10:00:00Z"
    assert p.status.message == ("missed the run due at 2026-12-01T10:00:00Z: 120 s late, past "
                                "startingDeadlineSeconds (60)")
    assert decide(spec(startingDeadlineSeconds=60), at(10, 0, 59), last=at(9, 50)).start == at(10, 0)


def test_while_suspended_times_pass_as_missed_and_resuming_starts_nothing_late():
    suspended = decide(spec(suspend=True), at(10, 1))
    assert suspended.start is None and suspended.status.next_schedule_time is None and suspended.wake is None
    assert suspended.status.last_schedule_time == "2026-12-01T10:00:00Z" and suspended.events == ()
    resumed = decide(spec(), at(10, 5), last=at(10, 0))
    assert resumed.start is None and resumed.wake == at(10, 10)


@pytest.mark.parametrize("policy,start,cancel,reason", [
    ("Allow", True, (), "RunStarted"),
    ("Forbid", False, (), "RunSkipped"),
    ("Replace", True, (run_name("nightly", at(10, 0)),), "RunReplaced"),
])
def test_a_run_due_while_the_last_goes_on(policy, start, cancel, reason):
    going = run(at(10, 0))
    p = decide(spec(concurrencyPolicy=policy), at(10, 10, 1), last=at(10, 0), runs=[going])
    assert (p.start == at(10, 10)) is start and p.cancel == cancel
    assert reason in [e[1] for e in p.events]
    expected = {"Allow": [going.name, run_name("nightly", at(10, 10))], "Forbid": [going.name],
                "Replace": [run_name("nightly", at(10, 10))]}[policy]
    assert p.status.active == sorted(expected)
    if policy == "Forbid":
        assert p.status.message == (f"skipped the run due at 2026-12-01T10:10:00Z: {going.name} still running "
                                    "(concurrencyPolicy Forbid)")


def test_ended_runs_beyond_the_history_limits_are_pruned_oldest_first():
    runs = [run(at(9, m), Phase.COMPLETED, at(9, m + 1)) for m in (0, 10, 20, 30)] + [
        run(at(8, m), Phase.FAILED, at(8, m + 1)) for m in (0, 10)]
    p = decide(spec(successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1), at(9, 35), last=at(9, 30), runs=runs)
    assert set(p.prune) == {run_name("nightly", at(9, 0)), run_name("nightly", at(9, 10)),
                            run_name("nightly", at(8, 0))}
    assert p.status.last_successful_time == "2026-12-01T09:31:00Z"


def test_a_seconds_field_schedules_within_a_minute():
    p = decide(spec(schedule="* * * * * */15"), at(10, 0, 31), last=at(10, 0, 15))
    assert p.start == at(10, 0, 30) and p.wake == at(10, 0, 45)


def test_the_schedule_is_read_in_its_time_zone():
    # 03:00 in Paris is 02:00 UTC in December.
    p = decide(spec(schedule="0 3 * * *", timeZone="Europe/Paris"), datetime(2026, 12, 2, 2, 0, 5, tzinfo=UTC))
    assert p.start == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("field,value,says", [
    ("schedule", "* * * *", "'* * * *' is not a cron expression of five fields"),
    ("schedule", "0 0 * * * * *", "is not a cron expression of five fields"),
    ("schedule", "@reboot", "is not a cron expression"),
    ("timeZone", "Mars/Olympus", "'Mars/Olympus' is not an IANA time zone"),
])
def test_a_bad_schedule_is_refused_naming_the_field(field, value, says):
    raw = {"schedule": "@daily", "runTemplate": {"agentRef": {"name": "a"}, "userInput": "x"}, field: value}
    parsed, error = parse(TaskScheduleSpec, raw)
    assert parsed is None and field in error and says in error, error
