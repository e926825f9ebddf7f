"""TaskRun: the operator's half of the state machine (kubechain/taskrun_lifecycle.py).

- `schedule` (every event of a Pending TaskRun, and a timer): resolve Task → Agent, enter Running.
  An Agent turning ready touches its waiting runs, so they start on that event, not the next tick.
- `supervise` (a kopf daemon for every Running TaskRun) keeps exactly one actor on it: it joins the
  live actor (after an operator restart too), or raises the fencing epoch and starts a fresh actor
  that restores from the checkpoint; it notices a dead actor the moment Ray fails its run future.
- `attend` (every event of a waiting run: PausedForUserInput, Delegating): creates the child runs of
  delegate calls, and resumes the run once every waiting call has its answer, decision or child result.
  A child that ends touches its parent (`notify_parent`).
- `cancel` and `keep_time` stop runs (spec.cancel, timeoutSeconds), expire approvals, and delete
  ended runs after ttlSecondsAfterFinished. `review_responses` refuses bad human replies.
"""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any

import kopf
from opentelemetry import trace

from kubechain.observability.handlers import TRACER, observed
from kubechain.observability.metrics import PHASES, RECOVERIES, TRANSITIONS
from kubechain.observability.tracing import span_in, traceparent
from kubechain.api.runspec import RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import (GROUP, VERSION, CallState, HumanResponse, Phase, TaskRunSpec, TaskRunStatus,
                                    WaitingFor)
from kubechain.api.v1alpha1.common import with_condition
from kubechain.builders import child_taskrun
from kubechain.naming import LABEL_AGENT, LABEL_PARENT_UID, actor_name
from kubechain.raygateway import ActorDied, RayUnavailable
from kubechain.resolve import parse, run_spec
from kubechain.queueing import Limits, Queued, Slot, plan, why_queued
from kubechain.settings import Settings
from kubechain.taskrun_lifecycle import (WAITING_PHASES, ChildOutcome, Nothing, Observation, Resume, Schedule, Stop,
                                         Wait, decide, decide_waiting, enter, gather_inputs, next_deadline,
                                         response_problems, stop_for)

from .catalog import IndexCatalog

RETRY_SECONDS = Settings().reconcile.pending_retry_seconds
CLOCK_SECONDS = 5.0  # the longest a clock sleeps before it looks at the live body again
MAX_BACKOFF_SECONDS = 5.0  # attempts are cheap (Ray is probed with a TCP connect first): come back soon


def is_pending(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase", Phase.PENDING.value) == Phase.PENDING.value


def is_running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == Phase.RUNNING.value


def is_waiting(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") in {p.value for p in WAITING_PHASES}


def has_ended(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") in (Phase.COMPLETED.value, Phase.FAILED.value)


def is_cancelled(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return bool(spec.get("cancel")) and not has_ended(status)


def has_clock(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    """Runs that something may be due for without an event: a timeout, an approval expiry, a TTL."""
    if has_ended(status):
        return spec.get("ttlSecondsAfterFinished") is not None
    return not is_pending(status)


QUEUE = "queue"
ANNOTATION_MAX_RUNNING = f"{GROUP}/max-running"


@kopf.index(GROUP, VERSION, "taskruns", when=is_pending)
def queued_taskruns(namespace: str, name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any):
    """Every Pending TaskRun, for the admission queue: (uid, agent or Task it names, queue entry)."""
    ref = (spec.get("agentRef") or spec.get("taskRef") or {}).get("name", "")
    kind = "Agent" if spec.get("agentRef") else "Task"
    entry = Queued(namespace, name, int(spec.get("priority") or 0), meta.get("creationTimestamp") or "")
    return {QUEUE: (uid, kind, ref, entry)}


@kopf.index(GROUP, VERSION, "taskruns", when=is_running)
def running_taskruns(namespace: str, uid: str, **_: Any):
    """Running TaskRuns (each holds an actor) by namespace: what the limits count."""
    return {namespace: uid}


@kopf.index("", "v1", "namespaces", annotations={ANNOTATION_MAX_RUNNING: kopf.PRESENT})
def namespace_limits(name: str, annotations: kopf.Annotations, **_: Any):
    """Namespaces with their own limit (annotation kubechain.dev/max-running)."""
    value = annotations.get(ANNOTATION_MAX_RUNNING, "")
    return {name: int(value)} if value.isdigit() else None


def admission(memo: kopf.Memo, indexes: dict[str, Any]) -> tuple[list[Slot], dict[str, int], Limits]:
    """The admission plan now: queued runs whose agent is ready, against what runs (or was just started)."""
    catalog = IndexCatalog(indexes)
    holding: dict[str, set[str]] = {ns: set(uids) for ns, uids in indexes["running_taskruns"].items()}
    for uid, namespace in memo.scheduled.items():
        holding.setdefault(namespace, set()).add(uid)
    counts = {ns: len(uids) for ns, uids in holding.items()}
    queued = [entry for uid, kind, ref, entry in indexes["queued_taskruns"].get(QUEUE, [])
              if uid not in memo.scheduled and agent_ready(catalog, entry.namespace, kind, ref)]
    settings = memo.settings.reconcile
    overrides = tuple((ns, next(iter(values))) for ns, values in indexes["namespace_limits"].items())
    limits = Limits(settings.max_running, settings.max_running_per_namespace, overrides)
    return plan(queued, counts, limits), counts, limits


def agent_ready(catalog: IndexCatalog, namespace: str, kind: str, ref: str) -> bool:
    if kind == "Task":
        ref = (((catalog.get("Task", namespace, ref) or {}).get("spec") or {}).get("agentRef") or {}).get("name", "")
    return bool(((catalog.get("Agent", namespace, ref) or {}).get("status") or {}).get("ready"))


async def wake_admitted(memo: kopf.Memo, indexes: dict[str, Any]) -> None:
    """A slot freed: the runs the plan now admits start on this event, not at their next retry."""
    async with memo.admission_lock:
        slots, _, _ = admission(memo, indexes)
    for slot in slots:
        if slot.admitted:
            await memo.kube.wake("taskruns", slot.run.namespace, slot.run.name, reason=f"slot {time.time_ns()}")


@kopf.index(GROUP, VERSION, "taskruns", when=is_pending)
def pending_taskruns(namespace: str, name: str, labels: kopf.Labels, **_: Any):
    """Pending TaskRuns by (namespace, agent), to wake them when the agent turns ready."""
    return {(namespace, labels.get(LABEL_AGENT, "")): name}


@kopf.index(GROUP, VERSION, "taskruns", labels={LABEL_PARENT_UID: kopf.PRESENT})
def child_taskruns(namespace: str, name: str, labels: kopf.Labels, status: kopf.Status, **_: Any):
    """Child TaskRuns by (namespace, parent uid): what a delegating parent waits for."""
    outcome = ChildOutcome(Phase(status.get("phase", "Pending")), status.get("output") or "", status.get("error") or "")
    return {(namespace, labels[LABEL_PARENT_UID]): (name, outcome)}


def children_of(index: kopf.Index, namespace: str, uid: str) -> dict[str, ChildOutcome]:
    return dict(index.get((namespace, uid), []))


def agent_and_input(catalog: IndexCatalog, namespace: str, spec: TaskRunSpec) -> tuple[str, str] | None:
    """(agent, user input) of a run: from its Task, or its own spec (child runs); None if the Task is missing."""
    if spec.task_ref is None:
        return spec.agent_ref.name, spec.user_input or ""
    task = catalog.get("Task", namespace, spec.task_ref.name)
    if task is None:
        return None
    return (task["spec"].get("agentRef") or {}).get("name", ""), task["spec"].get("userInput", "")


def observe(catalog: IndexCatalog, namespace: str, spec: TaskRunSpec) -> Observation:
    found = agent_and_input(catalog, namespace, spec)
    if found is None:
        return Observation(task_found=False)
    agent_name = found[0]
    agent = catalog.get("Agent", namespace, agent_name)
    status = (agent or {}).get("status") or {}
    message = (status.get("message") or "not reconciled yet") if agent else "not found"
    return Observation(True, agent_name, bool(status.get("ready")), message)


@kopf.on.event(GROUP, VERSION, "taskruns", when=is_pending)
@kopf.timer(GROUP, VERSION, "taskruns", id="retry", when=is_pending, interval=RETRY_SECONDS, initial_delay=RETRY_SECONDS)
@observed("TaskRun")
async def schedule(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
                   memo: kopf.Memo, **kwargs: Any) -> None:
    if kwargs.get("type") == "DELETED":
        return
    # The event handler and the timer run concurrently: one decision per TaskRun at a time.
    async with memo.locks.setdefault(uid, asyncio.Lock()):
        current = TaskRunStatus.model_validate(dict(status))
        if uid in memo.scheduled:
            return  # our Running write has not come back through the watch yet
        run_spec_, error = parse(TaskRunSpec, dict(spec))
        if error:
            if current.message != f"invalid spec: {error}":
                await memo.kube.patch_status("taskruns", namespace, name, {"message": f"invalid spec: {error}"})
            return
        seen = observe(IndexCatalog(kwargs), namespace, run_spec_)
        match decide(current, seen):
            case Wait(message=message):
                if current.message != message:
                    await memo.kube.patch_status("taskruns", namespace, name, {"message": message})
            case Schedule():
                async with memo.admission_lock:
                    slots, counts, limits = admission(memo, kwargs)
                    mine = next((s for s in slots if (s.run.namespace, s.run.name) == (namespace, name)), None)
                    if mine is not None and not mine.admitted:
                        waiting = sum(not s.admitted for s in slots)
                        message = f"Queued: position {mine.position} of {waiting} ({why_queued(namespace, counts, limits)})"
                        if (current.message, current.queue_position) != (message, mine.position):
                            await memo.kube.patch_status("taskruns", namespace, name,
                                                         {"message": message, "queuePosition": mine.position})
                        return
                    memo.scheduled[uid] = namespace  # counted as running from now on
                running = enter(current, Phase.RUNNING, "Scheduled", "starting an actor")
                # This handler's span starts the run's trace: everything later about the run joins it.
                await memo.kube.patch_status("taskruns", namespace, name, {
                    **running.to_wire(include={"phase", "message", "phase_history"}), "agent": seen.agent_name,
                    "actor": {"name": actor_name(namespace, name, uid), "namespace": memo.settings.ray.namespace},
                    "traceparent": current.traceparent or traceparent(trace.get_current_span()), "queuePosition": None})
                kopf.event(dict(body), type="Normal", reason="Scheduled", message=f"agent {seen.agent_name!r} is ready")
            case Nothing():
                pass


@kopf.daemon(GROUP, VERSION, "taskruns", when=is_running, cancellation_timeout=1.0, backoff=RETRY_SECONDS)
async def supervise(stopped: kopf.DaemonStopped, namespace: str, name: str, uid: str, spec: kopf.Spec,
                    body: kopf.Body, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
    ref = TaskRunRef(namespace=namespace, name=name, uid=uid)
    catalog, failures = IndexCatalog(kwargs), 0
    memo.scheduled.pop(uid, None)
    memo.locks.pop(uid, None)
    while not stopped:
        obj = await memo.kube.get("taskruns", namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            await kill_actor(memo, namespace, name, uid)  # deleted mid-run: stop its actor now
            return
        latest = TaskRunStatus.model_validate(obj.get("status") or {})
        if latest.phase is not Phase.RUNNING:
            return
        try:
            with span_in(latest.traceparent, TRACER, "TaskRun.supervise", **{"kubechain.name": name,
                                                                             "k8s.namespace.name": namespace}):
                run = await attach(memo, catalog, ref, obj, latest, kwargs["child_taskruns"], body)
            await set_ray_condition(memo, ref, latest, True, "Connected", "Ray is reachable")
            if not await until_stopped(memo.ray.wait(run), stopped):
                break  # deleted or no longer Running: kopf stops this daemon; don't keep it waiting
            failures = 0  # the actor returned: the status says whether the run ended
        except ActorDied as exc:
            failures += 1
            kopf.event(dict(body), type="Warning", reason="ActorLost", message=f"{exc}; restoring from the checkpoint")
        except RayUnavailable as exc:
            failures += 1
            await asyncio.to_thread(memo.ray.disconnect)
            await set_ray_condition(memo, ref, latest, False, "Unreachable", str(exc)[:500])
        except kopf.TemporaryError as exc:
            failures += 1
            await memo.kube.patch_status("taskruns", namespace, name, {"message": str(exc)})
        await stopped.wait(backoff(failures))
    if stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
        await kill_actor(memo, namespace, name, uid)


async def kill_actor(memo: kopf.Memo, namespace: str, name: str, uid: str) -> None:
    try:
        await asyncio.to_thread(memo.ray.kill, namespace, name, uid)
    except RayUnavailable:
        pass  # with the head gone the actor is gone; a raised epoch fences out any other


async def until_stopped(work: Any, stopped: kopf.DaemonStopped) -> bool:
    """Await `work` unless the daemon is asked to stop first; True when the work finished (errors raise)."""
    task, stop = asyncio.ensure_future(work), asyncio.ensure_future(stopped.wait())
    done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stop):
        if pending not in done:
            pending.cancel()
    if task in done:
        task.result()
        return True
    return False


def backoff(failures: int) -> float:
    """Seconds before the next attempt: a first failure is retried at once, repeated ones back off."""
    if failures == 0:
        return 0.2  # the actor returned but the run is still Running (e.g. a fenced actor): look again soon
    return 0.0 if failures == 1 else min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (failures - 2))


async def attach(memo: kopf.Memo, catalog: IndexCatalog, ref: TaskRunRef, obj: dict[str, Any],
                 latest: TaskRunStatus, children: kopf.Index, body: kopf.Body) -> Any:
    """The future of the run's final phase, from the live actor or from a fresh one at a higher epoch."""
    handle = await asyncio.to_thread(memo.ray.find, ref)
    if handle is None:  # only a new actor needs the run resolved (Agent, LLM, tools, the key's Secret)
        spec = await build_spec(memo, catalog, ref, obj, latest, children)
        # Raise the epoch before the actor exists: any older actor still writing is fenced out from now on.
        await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"epoch": spec.epoch})
        handle, actor = await asyncio.to_thread(memo.ray.create, spec)
        await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"actor": actor.to_wire()})
        restored = f"restored from the checkpoint at step {latest.step}" if latest.step else "new run"
        if spec.epoch > 1:
            RECOVERIES.labels(ref.namespace).inc()
        kopf.event(dict(body), type="Normal", reason="ActorStarted" if spec.epoch == 1 else "ActorRestarted",
                   message=f"actor {actor.name} (epoch {spec.epoch}): {restored}")
    else:  # after an operator restart (or a clean return): the run goes on in the same actor
        kopf.event(dict(body), type="Normal", reason="ActorAttached",
                   message=f"supervising the running actor (epoch {latest.epoch})")
    return await asyncio.to_thread(memo.ray.join, handle)


async def build_spec(memo: kopf.Memo, catalog: IndexCatalog, ref: TaskRunRef, obj: dict[str, Any],
                     latest: TaskRunStatus, children: kopf.Index) -> RunSpec:
    spec = TaskRunSpec.model_validate(obj["spec"])
    found = agent_and_input(catalog, ref.namespace, spec)
    if found is None:
        raise kopf.TemporaryError(f"Task {spec.task_ref.name!r} not found")
    agent_name, user_input = found
    agent = catalog.get("Agent", ref.namespace, agent_name)
    llm = agent and catalog.get("LLM", ref.namespace, agent["spec"]["llmRef"]["name"])
    if not (agent and llm and (agent.get("status") or {}).get("ready")):
        raise kopf.TemporaryError(f"Agent {agent_name!r} is not ready: cannot start an actor")
    key = None
    if secret_ref := llm["spec"].get("apiKeySecretRef"):
        secret = await memo.kube.secret_value(ref.namespace, secret_ref["name"], secret_ref["key"])
        if secret.problem:
            raise kopf.TemporaryError(secret.problem)
        key = secret.value
    gathered = gather_inputs(latest, spec.responses, children_of(children, ref.namespace, ref.uid),
                             datetime.now(timezone.utc))
    return run_spec(ref, agent_name, user_input, catalog, key, latest.epoch + 1, traceparent=latest.traceparent,
                    max_turns=spec.max_turns,
                    lineage=spec.parent.agents if spec.parent else [], inputs=gathered.inputs,
                    max_delegation_depth=memo.settings.reconcile.max_delegation_depth)


async def set_ray_condition(memo: kopf.Memo, ref: TaskRunRef, latest: TaskRunStatus, available: bool,
                            reason: str, message: str) -> None:
    """RayAvailable: while Ray is unreachable the run says so, and stays Running (nothing is marked Failed)."""
    old = next((c for c in latest.conditions if c.type == "RayAvailable"), None)
    if old is not None and (old.status == "True") == available:
        return
    conditions = with_condition(latest.conditions, "RayAvailable", available, reason, message)
    await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"conditions": [c.to_wire() for c in conditions]})
    if not available:
        kopf.event({"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskRun", "metadata": ref.model_dump()},
                   type="Warning", reason="RayUnavailable", message=f"{message}; retrying, the run stays Running")


@kopf.on.event(GROUP, VERSION, "taskruns")
@observed("TaskRun")
async def follow_phase(type: str, namespace: str, name: str, uid: str, status: kopf.Status, memo: kopf.Memo,
                       **kwargs: Any) -> None:
    """Metrics of phases and transitions, and condition Succeeded (Unknown until the run ends) for `kubectl wait`."""
    seen = memo.phases.get(uid)  # (length of phaseHistory, phase) when last seen
    if type == "DELETED":
        PHASES.observe(uid, namespace, None)
        memo.phases.pop(uid, None)
        memo.scheduled.pop(uid, None)
        if seen and seen[1] is Phase.RUNNING:
            await wake_admitted(memo, kwargs)
        return
    current = TaskRunStatus.model_validate(dict(status))
    PHASES.observe(uid, namespace, current.phase.value)
    if not current.phase_history or (seen and seen[0] == len(current.phase_history)):
        return
    last = current.phase_history[-1]
    if seen:  # not on the first sight after an operator start: counted by an earlier process
        TRANSITIONS.labels(last.phase.value, last.reason).inc()
    memo.phases[uid] = (len(current.phase_history), current.phase)
    if seen and seen[1] is Phase.RUNNING and current.phase is not Phase.RUNNING:
        await wake_admitted(memo, kwargs)
    ok = True if current.phase is Phase.COMPLETED else False if current.phase is Phase.FAILED else None
    old = next((c for c in current.conditions if c.type == "Succeeded"), None)
    if old is None or old.reason != last.reason or old.status != ("Unknown" if ok is None else str(ok)):
        conditions = with_condition(current.conditions, "Succeeded", ok, last.reason, last.message or last.phase.value)
        await memo.kube.patch_status("taskruns", namespace, name, {"conditions": [c.to_wire() for c in conditions]})


@kopf.on.event(GROUP, VERSION, "taskruns", when=is_waiting)
@observed("TaskRun")
async def attend(namespace: str, name: str, uid: str, memo: kopf.Memo, child_taskruns: kopf.Index,
                 **kwargs: Any) -> None:
    if kwargs.get("type") == "DELETED":
        return
    await resume_if_ready(memo, namespace, name, uid, child_taskruns)


async def resume_if_ready(memo: kopf.Memo, namespace: str, name: str, uid: str, children: kopf.Index) -> None:
    """A waiting run: start its child runs, and resume it once every waiting call has its input."""
    async with memo.locks.setdefault(uid, asyncio.Lock()):
        obj = await memo.kube.get("taskruns", namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        spec, status = TaskRunSpec.model_validate(obj["spec"]), TaskRunStatus.model_validate(obj.get("status") or {})
        if status.phase not in WAITING_PHASES or spec.cancel:
            return
        await start_children(memo, namespace, name, uid, spec, status)
        known = children_of(children, namespace, uid)
        match decide_waiting(status, gather_inputs(status, spec.responses, known, datetime.now(timezone.utc))):
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
    await kill_actor(memo, namespace, name, uid)
    for child, outcome in children_of(children, namespace, uid).items():
        if outcome.phase is None or not outcome.phase.terminal:
            await memo.kube.patch("taskruns", namespace, child, {"spec": {"cancel": True}})


@kopf.daemon(GROUP, VERSION, "taskruns", when=has_clock, cancellation_timeout=1.0)
async def keep_time(stopped: kopf.DaemonStopped, namespace: str, name: str, uid: str, body: kopf.Body,
                    memo: kopf.Memo, child_taskruns: kopf.Index, **_: Any) -> None:
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
                await resume_if_ready(memo, namespace, name, uid, child_taskruns)
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
