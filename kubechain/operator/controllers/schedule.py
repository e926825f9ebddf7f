"""TaskSchedule: a daemon per schedule that wakes at each due time (and when its spec changes), asks the plan
(kubechain/core/schedules.py) and applies it: cancel, start, prune, Events, status. Every step is idempotent (a
run's name is its due time; the plan finds a run it started before its status said so), so a restart or a second
look never starts a time twice."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, TaskScheduleSpec, TaskScheduleStatus
from kubechain.core.builders import scheduled_taskrun
from kubechain.core.naming import ANNOTATION_SCHEDULED_AT, LABEL_SCHEDULE
from kubechain.core.resolve import parse
from kubechain.core.schedules import Plan, ScheduledRun, parse_time, plan, rfc3339, run_name

CANCEL = {"spec": {"cancel": True}}  # as `kubechain cancel` does: the run and its children fail, reason Cancelled
ACTIVE_POLL_SECONDS = 5.0  # while a run is going: how often its phase is looked at (status.active, history)
IDLE_SECONDS = 300.0       # the longest sleep without a due time: a clock jump is noticed within it


@kopf.on.update(GROUP, VERSION, "taskschedules", field="spec")
async def respec(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """A changed spec (suspend, schedule, policy) is acted on now, not at the next due time."""
    memo.state.wakeups.setdefault(uid, asyncio.Event()).set()


@kopf.daemon(GROUP, VERSION, "taskschedules", cancellation_timeout=1.0)
async def keep(stopped: kopf.DaemonStopped, body: kopf.Body, namespace: str, name: str, uid: str,
               memo: kopf.Memo, **_: Any) -> None:
    state = memo.state
    woken = state.wakeups.setdefault(uid, asyncio.Event())
    created = parse_time(body["metadata"]["creationTimestamp"])
    written = TaskScheduleStatus()
    try:
        while not stopped:
            woken.clear()
            spec, error = parse(TaskScheduleSpec, dict(body.get("spec") or {}))
            if spec is None:
                await state.kube.patch_status("taskschedules", namespace, name, {"message": f"invalid spec: {error}"})
                await _sleep(woken, stopped, IDLE_SECONDS)
                continue
            seen = TaskScheduleStatus.model_validate(dict(body.get("status") or {}))
            status = written if (written.last_schedule_time or "") > (seen.last_schedule_time or "") else seen
            runs = await _runs(state.kube, namespace, name, uid)
            decision = plan(name, spec, status, list(runs.values()), created, datetime.now(timezone.utc))
            await _apply(state.kube, body, namespace, name, uid, spec, decision, runs)
            written = decision.status
            await _sleep(woken, stopped, _seconds_until(decision))
    finally:
        state.wakeups.pop(uid, None)


async def _runs(kube: Any, namespace: str, name: str, uid: str) -> dict[str, ScheduledRun]:
    """The schedule's TaskRuns (owned by this very object: not a deleted namesake's), by name."""
    found = {}
    for obj in await kube.list("taskruns", namespace, f"{LABEL_SCHEDULE}={name}"):
        meta = obj["metadata"]
        due = (meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_AT)
        if due is None or uid not in [o.get("uid") for o in meta.get("ownerReferences", [])]:
            continue
        status = obj.get("status") or {}
        phase = Phase(status.get("phase") or Phase.PENDING.value)
        history = status.get("phaseHistory") or []
        finished = parse_time(history[-1]["time"]) if phase.terminal and history else None
        found[meta["name"]] = ScheduledRun(meta["name"], parse_time(due), phase, finished, meta["uid"])
    return found


async def _apply(kube: Any, body: kopf.Body, namespace: str, name: str, uid: str, spec: TaskScheduleSpec,
                 decision: Plan, runs: dict[str, ScheduledRun]) -> None:
    for run in decision.cancel:
        await kube.patch("taskruns", namespace, run, CANCEL)
    if decision.start is not None:
        await kube.create("taskruns", namespace, scheduled_taskrun(
            namespace, name, uid, spec.run_template, run_name(name, decision.start), rfc3339(decision.start)))
    for run in decision.prune:
        await kube.delete("taskruns", namespace, run, runs[run].uid)
    for type_, reason, message in decision.events:
        kopf.event(body, type=type_, reason=reason, message=message)
    wire = decision.status.to_wire()
    old = dict(body.get("status") or {})
    if any(old.get(k) != v for k, v in wire.items()) or set(old) - set(wire):
        await kube.patch_status("taskschedules", namespace, name, {**{k: None for k in old}, **wire})


def _seconds_until(decision: Plan) -> float:
    if decision.status.active:
        return ACTIVE_POLL_SECONDS
    if decision.wake is None:  # suspended: the spec change that resumes it wakes the daemon
        return IDLE_SECONDS
    return min(max((decision.wake - datetime.now(timezone.utc)).total_seconds(), 0.0) + 0.05, IDLE_SECONDS)


async def _sleep(woken: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Until the time has come, the spec changed, or the daemon is stopped."""
    waits = {asyncio.ensure_future(woken.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
