"""TaskRun, while it waits or must stop (taskrun.py starts runs).

- `attend` (every event of a waiting run: PausedForUserInput, Delegating): creates the child runs of
  delegate calls, and resumes the run once every waiting call has its answer, decision or child result.
  A child that ends touches its parent (`notify_parent`).
- `cancel` and `keep_time` stop runs (spec.cancel, timeoutSeconds), expire approvals, and delete
  ended runs after ttlSecondsAfterFinished. `review_responses` refuses bad human replies.
"""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import kopf

from kubechain.api.v1alpha1 import (GROUP, VERSION, CallState, HumanResponse, Phase, TaskRunSpec, TaskRunStatus,
                                    WaitingFor)
from kubechain.api.v1alpha1.common import with_condition
from kubechain.builders import child_taskrun
from kubechain.naming import LABEL_PARENT_UID
from kubechain.observability.handlers import observed
from kubechain.resolve import parse
from kubechain.taskrun_lifecycle import (WAITING_PHASES, Resume, Stop, Wait, decide_waiting, enter, gather_inputs,
                                         next_deadline, response_problems, stop_for)

from .taskrun import children_of, kill_actor
from .taskrun_filters import has_clock, has_ended, is_cancelled, is_waiting
from .tooljobs import jobs_of, start_jobs

CLOCK_SECONDS = 5.0  # the longest a clock sleeps before it looks at the live body again


@kopf.on.event(GROUP, VERSION, "taskruns", when=is_waiting)
@observed("TaskRun")
async def attend(namespace: str, name: str, uid: str, memo: kopf.Memo, **kwargs: Any) -> None:
    if kwargs.get("type") == "DELETED":
        return
    await resume_if_ready(memo, namespace, name, uid, kwargs)


async def resume_if_ready(memo: kopf.Memo, namespace: str, name: str, uid: str, indices: dict[str, Any]) -> None:
    """A waiting run: start its child runs and tool Jobs, and resume it once every waiting call has its input
    (`indices`: kopf's, with child runs and tool Jobs)."""
    async with memo.locks.setdefault(uid, asyncio.Lock()):
        obj = await memo.kube.get("taskruns", namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        spec, status = TaskRunSpec.model_validate(obj["spec"]), TaskRunStatus.model_validate(obj.get("status") or {})
        if status.phase not in WAITING_PHASES or spec.cancel:
            return
        await start_children(memo, namespace, name, uid, spec, status)
        await start_jobs(memo, namespace, name, uid, spec, status, indices)
        known = children_of(indices["child_taskruns"], namespace, uid)
        gathered = gather_inputs(status, spec.responses, known, datetime.now(timezone.utc),
                                 jobs_of(indices, namespace, uid, status))
        match decide_waiting(status, gathered):
            case Resume(reason=reason, message=message):
                running = enter(status, Phase.RUNNING, reason, message)
                if await memo.kube.patch_status("taskruns", namespace, name, running.to_wire(
                        include={"phase", "message", "phase_history"}), version=obj["metadata"]["resourceVersion"]):
                    kopf.event(obj, type="Normal", reason=reason, message=message)
            case Wait(message=message) if status.message != message:
                await memo.kube.patch_status("taskruns", namespace, name, {"message": message})


async def start_children(memo: kopf.Memo, namespace: str, name: str, uid: str, spec: TaskRunSpec,
                         status: TaskRunStatus) -> None:
    """Create the child TaskRun of every waiting delegate call (deterministic names: a retry finds it)."""
    for record in status.tool_call_history:
        if record.state is CallState.WAITING and record.waiting_for is WaitingFor.CHILD_RUN:
            message = json.loads(record.arguments)["message"]  # the actor checked it before it journaled the call
            body = child_taskrun(namespace, name, uid, spec, status.agent, record, message, status.traceparent)
            if await memo.kube.create("taskruns", namespace, body):
                kopf.event({"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskRun",
                            "metadata": {"namespace": namespace, "name": name, "uid": uid}},
                           type="Normal", reason="Delegated",
                           message=f"call {record.id}: child TaskRun {record.child_run} (agent {record.delegated_to})")


@kopf.on.event(GROUP, VERSION, "taskruns", when=has_ended, labels={LABEL_PARENT_UID: kopf.PRESENT})
@observed("TaskRun")
async def notify_parent(namespace: str, spec: kopf.Spec, name: str, status: kopf.Status, memo: kopf.Memo,
                        **kwargs: Any) -> None:
    """A child run ended: its parent may resume now."""
    if kwargs.get("type") != "DELETED" and (parent := spec.get("parent")):
        await memo.kube.wake("taskruns", namespace, parent["name"], reason=f"child {name} {status.get('phase')}")


@kopf.on.event(GROUP, VERSION, "taskruns", when=is_cancelled)
@observed("TaskRun")
async def cancel(namespace: str, name: str, uid: str, memo: kopf.Memo, child_taskruns: kopf.Index,
                 **kwargs: Any) -> None:
    if kwargs.get("type") != "DELETED":
        await stop_run(memo, namespace, name, uid, child_taskruns, Stop("Cancelled", "cancelled: spec.cancel is true"))


async def stop_run(memo: kopf.Memo, namespace: str, name: str, uid: str, children: kopf.Index, stop: Stop) -> None:
    """End a run that has not ended: Failed with the stop's reason, its actor fenced out (epoch) and
    killed, its child runs cancelled."""
    for _ in range(10):  # optimistic concurrency: the actor may be writing a checkpoint right now
        obj = await memo.kube.get("taskruns", namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        status = TaskRunStatus.model_validate(obj.get("status") or {})
        if status.phase.terminal:
            break
        failed = enter(status.model_copy(update={"error": stop.message, "epoch": status.epoch + 1}),
                       Phase.FAILED, stop.reason, stop.message)
        fields = failed.to_wire(include={"phase", "message", "phase_history", "error", "epoch"})
        if await memo.kube.patch_status("taskruns", namespace, name, fields, version=obj["metadata"]["resourceVersion"]):
            kopf.event(obj, type="Warning", reason=stop.reason, message=stop.message)
            break
    await kill_actor(memo, namespace, name, uid, obj)
    for child, outcome in children_of(children, namespace, uid).items():
        if outcome.phase is None or not outcome.phase.terminal:
            await memo.kube.patch("taskruns", namespace, child, {"spec": {"cancel": True}})


@kopf.daemon(GROUP, VERSION, "taskruns", when=has_clock, cancellation_timeout=1.0)
async def keep_time(stopped: kopf.DaemonStopped, namespace: str, name: str, uid: str, body: kopf.Body,
                    memo: kopf.Memo, child_taskruns: kopf.Index, **kwargs: Any) -> None:
    """Sleeps until the next moment something is due (body is kopf's live view of the run)."""
    while not stopped:
        spec, error = parse(TaskRunSpec, dict(body.get("spec") or {}))
        status = TaskRunStatus.model_validate(body.get("status") or {})
        if error:
            return
        now = datetime.now(timezone.utc)
        if status.phase.terminal:
            due = next_deadline(spec, status)
            if due is None:
                return
            if now >= due:
                await memo.kube.delete("taskruns", namespace, name, uid)
                return
        elif stop := stop_for(spec, False, status, now):
            await stop_run(memo, namespace, name, uid, child_taskruns, stop)
        elif status.phase in WAITING_PHASES and any(
                r.expires_at and r.state is CallState.WAITING for r in status.tool_call_history):
            due = next_deadline(spec, status)
            if due is not None and now >= due:
                await resume_if_ready(memo, namespace, name, uid, {"child_taskruns": child_taskruns, **kwargs})
        due = next_deadline(spec, status)
        pause = CLOCK_SECONDS if due is None else min(CLOCK_SECONDS, max(0.05, (due - now).total_seconds()))
        await stopped.wait(pause)


@kopf.on.event(GROUP, VERSION, "taskruns", when=lambda spec, **_: bool(spec.get("responses")))
@observed("TaskRun")
async def review_responses(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
                           memo: kopf.Memo, **kwargs: Any) -> None:
    """Condition ResponsesValid (and a Warning) for replies that are refused; they change nothing."""
    if kwargs.get("type") == "DELETED":
        return
    current = TaskRunStatus.model_validate(dict(status))
    responses = {k: HumanResponse.model_validate(v) for k, v in dict(spec.get("responses") or {}).items()}
    problems = response_problems(current, responses, sealed=current.sealed_context.tool_calls > 0)
    old = next((c for c in current.conditions if c.type == "ResponsesValid"), None)
    reason, message = ("Refused", "; ".join(problems)[:1000]) if problems else ("Accepted", "every reply is accepted")
    if old is not None and (old.reason, old.message) == (reason, message):
        return
    if old is None and not problems:
        return
    conditions = with_condition(current.conditions, "ResponsesValid", not problems, reason, message)
    await memo.kube.patch_status("taskruns", namespace, name, {"conditions": [c.to_wire() for c in conditions]})
    if problems:
        kopf.event(dict(body), type="Warning", reason="ResponseRefused", message=message)
