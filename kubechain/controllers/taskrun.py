"""TaskRun: the operator's half of the state machine (kubechain/taskrun_lifecycle.py), by concern:
this module starts runs and keeps their actors; taskrun_waits.py waits, stops and keeps time;
taskrun_queue.py holds what the admission plan (kubechain/queueing.py) is computed from.

- `schedule` (every event of a Pending TaskRun, and a timer): resolve Task → Agent, and enter Running
  if the admission plan has a slot for it, else write its place in the queue. An Agent turning ready
  touches its waiting runs, so they start on that event, not the next tick.
- `supervise` (a kopf daemon for every Running TaskRun) keeps exactly one actor on it: it joins the
  live actor (after an operator restart too), or raises the fencing epoch and starts a fresh actor
  that restores from the checkpoint; it notices a dead actor the moment Ray fails its run future.
- `follow_phase` (every event): metrics, condition Succeeded, and a freed slot wakes the next runs.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import kopf
from opentelemetry import trace

from pydantic import SecretStr

from kubechain.api.runspec import RunSpec, TaskRunRef, secret_key
from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, TaskRunSpec, TaskRunStatus
from kubechain.api.v1alpha1.common import with_condition
from kubechain.naming import LABEL_AGENT, LABEL_PARENT_UID, actor_name
from kubechain.observability.handlers import TRACER, observed
from kubechain.observability.metrics import PHASES, RECOVERIES, TRANSITIONS
from kubechain.observability.tracing import span_in, traceparent
from kubechain.raygateway import STANDBY_PREFIX, ActorDied, RayUnavailable
from kubechain.resolve import parse, run_spec
from kubechain.settings import Settings
from kubechain.taskrun_lifecycle import (ChildOutcome, Nothing, Observation, Schedule, Wait, decide, enter,
                                         gather_inputs)

from .catalog import IndexCatalog
from .taskrun_filters import is_blocked, is_pending, is_queued, is_running
from .taskrun_queue import admit, wake_admitted
from .tooljobs import jobs_of

RETRY_SECONDS = Settings().reconcile.pending_retry_seconds
MAX_BACKOFF_SECONDS = 5.0  # attempts are cheap (Ray is probed with a TCP connect first): come back soon


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
@kopf.timer(GROUP, VERSION, "taskruns", id="retry", when=is_blocked, interval=RETRY_SECONDS, initial_delay=RETRY_SECONDS)
# A queued run starts when a freed slot wakes it; this only refreshes its place and makes good a lost wake,
# so a thousand queued runs cost a timer call per RETRY_SECONDS * 6 each, not per RETRY_SECONDS.
@kopf.timer(GROUP, VERSION, "taskruns", id="requeue", when=is_queued, interval=RETRY_SECONDS * 6,
            initial_delay=RETRY_SECONDS)
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
                async with memo.admission_lock:  # no awaits inside: every Pending run's decision takes this lock
                    queued = admit(memo, kwargs, namespace, name, uid)
                if queued is not None:
                    message, position = queued
                    if (current.message, current.queue_position) != (message, position):
                        await memo.kube.patch_status("taskruns", namespace, name,
                                                     {"message": message, "queuePosition": position})
                    return
                running = enter(current, Phase.RUNNING, "Scheduled", "starting an actor")
                # This handler's span starts the run's trace: everything later about the run joins it.
                try:
                    await memo.kube.patch_status("taskruns", namespace, name, {
                        **running.to_wire(include={"phase", "message", "phase_history"}), "agent": seen.agent_name,
                        "actor": {"name": actor_name(namespace, name, uid), "namespace": memo.settings.ray.namespace},
                        "traceparent": current.traceparent or traceparent(trace.get_current_span()),
                        "queuePosition": None})
                except Exception:
                    memo.scheduled.pop(uid, None)  # not started: its slot is free, and kopf's retry decides again
                    raise
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
            await kill_actor(memo, namespace, name, uid, body)  # deleted mid-run: stop its actor now
            return
        latest = TaskRunStatus.model_validate(obj.get("status") or {})
        if latest.phase is not Phase.RUNNING:
            return
        try:
            with span_in(latest.traceparent, TRACER, "TaskRun.supervise", **{"kubechain.name": name,
                                                                             "k8s.namespace.name": namespace}):
                actor, handle, run = await attach(memo, catalog, ref, obj, latest, kwargs, body)
            if actor.startswith(STANDBY_PREFIX):
                background(memo, recycle_when_done(memo, actor, handle, run))
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
        await kill_actor(memo, namespace, name, uid, body)


async def recycle_when_done(memo: kopf.Memo, actor: str, handle: Any, run: Any) -> None:
    """A pooled actor goes back to the pool once its run returns, even after kopf stopped the run's daemon
    (the watch event of the run's last phase often arrives before the actor's return value)."""
    try:
        await memo.ray.wait(run)
    except (ActorDied, RayUnavailable):
        return
    await asyncio.to_thread(memo.ray.recycle, actor, handle)


def background(memo: kopf.Memo, work: Any) -> None:
    task = asyncio.create_task(work)
    memo.background.add(task)  # asyncio keeps only a weak reference to a task
    task.add_done_callback(memo.background.discard)


async def kill_actor(memo: kopf.Memo, namespace: str, name: str, uid: str, obj: Any = None) -> None:
    """Stop the run's actor: the one its status (of `obj`) names, and any under the run's own actor name."""
    actor = ((obj or {}).get("status") or {}).get("actor") or {}
    try:
        await asyncio.to_thread(memo.ray.kill, namespace, name, uid, actor.get("name"))
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
                 latest: TaskRunStatus, indices: dict[str, Any], body: kopf.Body) -> tuple[str, Any, Any]:
    """(actor name, handle, the future of the run's final phase): the live actor's, or a fresh one's at a
    higher epoch."""
    name = latest.actor.name if latest.actor else actor_name(ref.namespace, ref.name, ref.uid)
    # Epoch 0: no actor was ever started (the epoch is raised before one is), so there is none to find.
    handle = await asyncio.to_thread(memo.ray.find, ref, name) if latest.epoch else None
    spec = None
    if handle is None:  # only a new actor needs the run resolved (Agent, LLM, tools, the key's Secret)
        spec = await build_spec(memo, catalog, ref, obj, latest, indices)
        # Raise the epoch before the actor exists: any older actor still writing is fenced out from now on.
        await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"epoch": spec.epoch})
        handle, actor = await asyncio.to_thread(memo.ray.create, spec)
        name = actor.name
        # Recorded before the actor gets the run: a standby is found again by this name after a restart.
        await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"actor": actor.to_wire()})
        restored = f"restored from the checkpoint at step {latest.step}" if latest.step else "new run"
        if spec.epoch > 1:
            RECOVERIES.labels(ref.namespace).inc()
        kopf.event(dict(body), type="Normal", reason="ActorStarted" if spec.epoch == 1 else "ActorRestarted",
                   message=f"actor {actor.name} (epoch {spec.epoch}): {restored}")
    else:  # after an operator restart (or a clean return): the run goes on in the same actor
        kopf.event(dict(body), type="Normal", reason="ActorAttached",
                   message=f"supervising the running actor (epoch {latest.epoch})")
    return name, handle, await asyncio.to_thread(memo.ray.join, handle, spec)


async def build_spec(memo: kopf.Memo, catalog: IndexCatalog, ref: TaskRunRef, obj: dict[str, Any],
                     latest: TaskRunStatus, indices: dict[str, Any]) -> RunSpec:
    """The actor's RunSpec; `indices` are kopf's (child runs and tool Jobs: the inputs of waiting calls)."""
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
        key = await secret_value(memo, ref.namespace, secret_ref["name"], secret_ref["key"])
    gathered = gather_inputs(latest, spec.responses, children_of(indices["child_taskruns"], ref.namespace, ref.uid),
                             datetime.now(timezone.utc), jobs_of(indices, ref.namespace, ref.uid, latest))
    run = run_spec(ref, agent_name, user_input, catalog, key, latest.epoch + 1, traceparent=latest.traceparent,
                   max_turns=spec.max_turns, max_parallel_tool_calls=spec.max_parallel_tool_calls,
                   lineage=spec.parent.agents if spec.parent else [], inputs=gathered.inputs,
                   max_delegation_depth=memo.settings.reconcile.max_delegation_depth)
    for name, secret_key_name in sorted({r for tool in run.tools for r in tool.secret_refs()}):
        run.secrets[secret_key(name, secret_key_name)] = SecretStr(
            await secret_value(memo, ref.namespace, name, secret_key_name))
    return run


async def secret_value(memo: kopf.Memo, namespace: str, name: str, key: str) -> str:
    secret = await memo.kube.secret_value(namespace, name, key)
    if secret.problem:
        raise kopf.TemporaryError(secret.problem)
    return secret.value


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
