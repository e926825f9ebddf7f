"""What a TaskSchedule does now: a pure function of its spec, status, runs and the time (no I/O), applied by
kubechain/operator/controllers/schedule.py. CronJob's rules, said once:

- The due times are the cron expression's, read in `timeZone`, after `status.lastScheduleTime` (or the schedule's
  creation). Only the latest due time can start a run; earlier ones passed without one are missed (the operator
  was down): one run late, not a burst of them.
- It starts unless: the schedule is suspended (then every passed time is missed, and nothing starts when it is
  resumed), or `startingDeadlineSeconds` has passed since it (missed), or `concurrencyPolicy: Forbid` finds a run
  still going (skipped). `Replace` cancels the runs still going, then starts.
- Each due time is done with once decided (started, skipped or missed): `lastScheduleTime` moves to it, so a retry,
  an operator restart or a second look never starts it twice; the run's name comes from its time as well.
- Ended runs beyond the history limits are deleted, oldest first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from kubechain.api.v1alpha1 import ConcurrencyPolicy, Phase, TaskScheduleSpec, TaskScheduleStatus

MAX_MISSED_COUNTED = 100  # past this, the message says "over 100" rather than walking every missed time


@dataclass(frozen=True)
class ScheduledRun:
    """A TaskRun of the schedule, as the controller found it."""

    name: str
    scheduled: datetime  # its due time (from the run's annotation)
    phase: Phase
    finished: datetime | None = None  # when it Completed or Failed
    uid: str = ""


@dataclass(frozen=True)
class Plan:
    status: TaskScheduleStatus
    start: datetime | None = None  # start the run of this due time
    cancel: tuple[str, ...] = ()   # cancel these first (Replace)
    prune: tuple[str, ...] = ()    # delete these ended runs (history limits)
    events: tuple[tuple[str, str, str], ...] = field(default=())  # (type, reason, message)
    wake: datetime | None = None   # the next due time (none while suspended)


def rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_name(schedule: str, due: datetime) -> str:
    """The run of a due time: named after it (seconds since the epoch: a schedule may have a seconds field), so a
    second attempt to start it finds the first."""
    return f"{schedule}-{int(due.timestamp())}"[:253]


def _due_times(spec: TaskScheduleSpec, after: datetime, now: datetime) -> tuple[datetime | None, int, datetime]:
    """(the latest due time in (after, now], how many earlier ones were passed, the next one after now)."""
    from croniter import croniter

    zone = ZoneInfo(spec.time_zone)
    latest = croniter(spec.schedule, now.astimezone(zone) + timedelta(microseconds=1)).get_prev(datetime)
    upcoming = croniter(spec.schedule, now.astimezone(zone)).get_next(datetime)
    latest, upcoming = latest.astimezone(timezone.utc), upcoming.astimezone(timezone.utc)
    if latest <= after:
        return None, 0, upcoming
    earlier, walker = 0, croniter(spec.schedule, after.astimezone(zone))
    while earlier <= MAX_MISSED_COUNTED and walker.get_next(datetime) < latest:
        earlier += 1
    return latest, earlier, upcoming


def plan(name: str, spec: TaskScheduleSpec, status: TaskScheduleStatus, runs: list[ScheduledRun],
         created: datetime, now: datetime) -> Plan:
    active = sorted((r for r in runs if not r.phase.terminal), key=lambda r: r.scheduled)
    after = parse_time(status.last_schedule_time) if status.last_schedule_time else created
    due, earlier, upcoming = _due_times(spec, after, now)
    events: list[tuple[str, str, str]] = []
    start, cancel, message = None, (), status.message
    if earlier and not spec.suspend:
        count = f"over {MAX_MISSED_COUNTED}" if earlier > MAX_MISSED_COUNTED else str(earlier)
        events.append(("Warning", "MissedSchedule", f"{count} scheduled time(s) before {rfc3339(due)} passed "
                                                    f"without a run (the operator was not running)"))
    if due is not None:
        late = (now - due).total_seconds()
        if any(r.scheduled == due for r in runs):  # started already: its status write was lost (a retry)
            message = f"started {run_name(name, due)} (due at {rfc3339(due)})"
        elif spec.suspend:
            message = f"suspended: the run due at {rfc3339(due)} was not started"
        elif spec.starting_deadline_seconds is not None and late > spec.starting_deadline_seconds:
            message = (f"missed the run due at {rfc3339(due)}: {late:.0f} s late, past startingDeadlineSeconds "
                       f"({spec.starting_deadline_seconds})")
            events.append(("Warning", "MissedSchedule", message))
        elif active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
            message = (f"skipped the run due at {rfc3339(due)}: {', '.join(r.name for r in active)} still "
                       f"running (concurrencyPolicy Forbid)")
            events.append(("Normal", "RunSkipped", message))
        else:
            if active and spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                cancel = tuple(r.name for r in active)
                events.append(("Normal", "RunReplaced", f"cancelled {', '.join(cancel)} for the run due at "
                                                        f"{rfc3339(due)} (concurrencyPolicy Replace)"))
            start, message = due, f"started {run_name(name, due)} (due at {rfc3339(due)})"
            events.append(("Normal", "RunStarted", message))
    still = [r.name for r in active if r.name not in cancel] + ([run_name(name, start)] if start else [])
    completed = [r for r in runs if r.phase is Phase.COMPLETED]
    succeeded = max((r.finished for r in completed if r.finished), default=None)
    new = TaskScheduleStatus(
        last_schedule_time=rfc3339(due) if due is not None else status.last_schedule_time,
        next_schedule_time=None if spec.suspend else rfc3339(upcoming),
        last_successful_time=rfc3339(succeeded) if succeeded else status.last_successful_time,
        active=sorted(set(still)), message=message)
    return Plan(status=new, start=start, cancel=cancel, events=tuple(events),
                prune=_beyond_history(runs, spec), wake=None if spec.suspend else upcoming)


def _beyond_history(runs: list[ScheduledRun], spec: TaskScheduleSpec) -> tuple[str, ...]:
    """Ended runs past the history limits: the newest `limit` of each outcome stay."""
    pruned: list[str] = []
    for phase, limit in ((Phase.COMPLETED, spec.successful_runs_history_limit),
                         (Phase.FAILED, spec.failed_runs_history_limit)):
        ended = sorted((r for r in runs if r.phase is phase), key=lambda r: r.scheduled, reverse=True)
        pruned += [r.name for r in ended[limit:]]
    return tuple(sorted(pruned))
