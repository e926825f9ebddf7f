"""TaskSchedule: runs an agent on a cron schedule, as a CronJob runs a Job. Each scheduled run is a TaskRun the
schedule owns (deleting the schedule deletes its runs), named after its scheduled time (seconds since the epoch)."""
from __future__ import annotations

from enum import Enum

from pydantic import Field, field_validator

from .common import AGE, KindInfo, LocalObjectReference, Model, PrinterColumn
from .taskrun import RunLimits


class ConcurrencyPolicy(str, Enum):
    """What happens when a run is due while an earlier run of the schedule has not ended (CronJob's policies)."""

    ALLOW = "Allow"      # start it anyway: runs overlap
    FORBID = "Forbid"    # skip it (Event RunSkipped); the next due time is tried as usual
    REPLACE = "Replace"  # cancel the runs still going (they fail with reason Cancelled), then start it


class RunTemplate(RunLimits):
    """The TaskRun each scheduled time starts: an agent and the user's message, with the run's limits."""

    agent_ref: LocalObjectReference = Field(description="The agent that works on each run.")
    user_input: str = Field(min_length=1, description="The user's message that starts each run's conversation.")


class TaskScheduleSpec(Model):
    schedule: str = Field(min_length=1, description="When runs start: a cron expression of five fields (minute hour "
                          "day-of-month month day-of-week, e.g. `0 3 * * 1-5`), optionally a sixth for seconds "
                          "(`* * * * * */30`), or @hourly, @daily, @weekly, @monthly, @yearly.")
    time_zone: str = Field(default="Etc/UTC", description="The IANA time zone the schedule is read in (e.g. "
                           "Europe/Paris).")
    run_template: RunTemplate = Field(description="The TaskRun each scheduled time starts.")
    concurrency_policy: ConcurrencyPolicy = Field(default=ConcurrencyPolicy.ALLOW, description="When a run is due "
                                                  "while an earlier one has not ended: Allow (overlap), Forbid (skip "
                                                  "it) or Replace (cancel the earlier ones).")
    suspend: bool = Field(default=False, description="Start no new runs while true (runs going on are not touched); "
                          "times passed while suspended are missed.")
    starting_deadline_seconds: int | None = Field(default=None, ge=1, description="A run that could not start within "
                                                  "this many seconds of its time (the operator was down, or the "
                                                  "schedule suspended) is missed, not started late (Event "
                                                  "MissedSchedule). Default: the latest missed time starts late, "
                                                  "once; earlier ones are missed.")
    successful_runs_history_limit: int = Field(default=3, ge=0, description="Completed runs kept; older ones are "
                                               "deleted.")
    failed_runs_history_limit: int = Field(default=1, ge=0, description="Failed runs kept; older ones are deleted.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter  # here, not at import: actors load these models too

        fields = value.split()
        if (value.strip() != value or len(fields) not in (1, 5, 6) or (len(fields) == 1 and value == "@reboot")
                or not croniter.is_valid(value)):
            raise ValueError(f"{value!r} is not a cron expression of five fields (minute hour day-of-month month "
                             f"day-of-week), six (a last one for seconds), or @hourly, @daily, @weekly, @monthly, "
                             f"@yearly")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Etc/UTC, Europe/Paris)") from None
        return value


class TaskScheduleStatus(Model):
    last_schedule_time: str | None = Field(default=None, description="The scheduled time of the last run started "
                                           "(or skipped, or missed): times up to it are done with (RFC 3339).")
    next_schedule_time: str | None = Field(default=None, description="When the next run is due (RFC 3339); none "
                                           "while suspended.")
    last_successful_time: str | None = Field(default=None, description="When the last run that Completed finished.")
    active: list[str] = Field(default_factory=list, description="The schedule's runs that have not ended.")
    message: str = Field(default="", description="What the schedule did last, or why it cannot run.")


KIND = KindInfo(
    kind="TaskSchedule", plural="taskschedules", singular="taskschedule", spec=TaskScheduleSpec,
    status=TaskScheduleStatus, short_names=("tsch",),
    description="Runs an agent on a cron schedule: each due time starts a TaskRun owned by the schedule.",
    columns=(PrinterColumn("Schedule", ".spec.schedule"), PrinterColumn("Suspend", ".spec.suspend", "boolean"),
             PrinterColumn("Active", ".status.active[*]", description="Runs not ended."),
             PrinterColumn("Last", ".status.lastScheduleTime", "date"),
             PrinterColumn("Next", ".status.nextScheduleTime", priority=1),
             PrinterColumn("Message", ".status.message", priority=1), AGE),
)
