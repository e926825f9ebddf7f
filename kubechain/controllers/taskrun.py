"""TaskRun: the operator's half of the state machine (kubechain/taskrun_lifecycle.py).

- `schedule` (every event of a Pending TaskRun, and a timer): resolve Task → Agent, enter Running.
  An Agent turning ready touches its waiting runs, so they start on that event, not the next tick.
- `supervise` (a kopf daemon for every Running TaskRun) keeps exactly one actor on it: it joins the
  live actor (after an operator restart too), or raises the fencing epoch and starts a fresh actor
  that restores from the checkpoint; it notices a dead actor the moment Ray fails its run future.
"""
from __future__ import annotations

import asyncio
from typing import Any

import kopf

from kubechain.api.runspec import RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, TaskRunStatus
from kubechain.api.v1alpha1.common import with_condition
from kubechain.naming import LABEL_AGENT, actor_name
from kubechain.raygateway import ActorDied, RayUnavailable
from kubechain.resolve import run_spec
from kubechain.settings import Settings
from kubechain.taskrun_lifecycle import Nothing, Observation, Schedule, Wait, decide, enter

from .catalog import IndexCatalog

RETRY_SECONDS = Settings().reconcile.pending_retry_seconds
MAX_BACKOFF_SECONDS = 5.0  # attempts are cheap (Ray is probed with a TCP connect first): come back soon


def is_pending(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase", Phase.PENDING.value) == Phase.PENDING.value


def is_running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == Phase.RUNNING.value


@kopf.index(GROUP, VERSION, "taskruns", when=is_pending)
def pending_taskruns(namespace: str, name: str, labels: kopf.Labels, **_: Any):
    """Pending TaskRuns by (namespace, agent), to wake them when the agent turns ready."""
    return {(namespace, labels.get(LABEL_AGENT, "")): name}


def observe(catalog: IndexCatalog, namespace: str, task_name: str) -> Observation:
    task = catalog.get("Task", namespace, task_name)
    if task is None:
        return Observation(task_found=False)
    agent_name = (task["spec"].get("agentRef") or {}).get("name", "")
    agent = catalog.get("Agent", namespace, agent_name)
    status = (agent or {}).get("status") or {}
    message = (status.get("message") or "not reconciled yet") if agent else "not found"
    return Observation(True, agent_name, bool(status.get("ready")), message)


@kopf.on.event(GROUP, VERSION, "taskruns", when=is_pending)
@kopf.timer(GROUP, VERSION, "taskruns", id="retry", when=is_pending, interval=RETRY_SECONDS, initial_delay=RETRY_SECONDS)
async def schedule(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
                   memo: kopf.Memo, **kwargs: Any) -> None:
    if kwargs.get("type") == "DELETED":
        return
    # The event handler and the timer run concurrently: one decision per TaskRun at a time.
    async with memo.locks.setdefault(uid, asyncio.Lock()):
        current = TaskRunStatus.model_validate(dict(status))
        if uid in memo.scheduled:
            return  # our Running write has not come back through the watch yet
        seen = observe(IndexCatalog(kwargs), namespace, spec["taskRef"]["name"])
        match decide(current, seen):
            case Wait(message=message):
                if current.message != message:
                    await memo.kube.patch_status("taskruns", namespace, name, {"message": message})
            case Schedule():
                running = enter(current, Phase.RUNNING, "Scheduled", "starting an actor")
                await memo.kube.patch_status("taskruns", namespace, name, {
                    **running.to_wire(include={"phase", "message", "phase_history"}), "agent": seen.agent_name,
                    "actor": {"name": actor_name(namespace, name, uid), "namespace": memo.settings.ray.namespace}})
                memo.scheduled.add(uid)
            case Nothing():
                pass


@kopf.daemon(GROUP, VERSION, "taskruns", when=is_running, cancellation_timeout=1.0, backoff=RETRY_SECONDS)
async def supervise(stopped: kopf.DaemonStopped, namespace: str, name: str, uid: str, spec: kopf.Spec,
                    body: kopf.Body, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
    ref = TaskRunRef(namespace=namespace, name=name, uid=uid)
    catalog, task_name, failures = IndexCatalog(kwargs), spec["taskRef"]["name"], 0
    memo.scheduled.discard(uid)
    memo.locks.pop(uid, None)
    while not stopped:
        obj = await memo.kube.get("taskruns", namespace, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            await asyncio.to_thread(memo.ray.kill, namespace, name, uid)  # deleted mid-run: stop its actor now
            return
        latest = TaskRunStatus.model_validate(obj.get("status") or {})
        if latest.phase is not Phase.RUNNING:
            return
        try:
            run = await attach(memo, catalog, ref, task_name, latest, body)
            await set_ray_condition(memo, ref, latest, True, "Connected", "Ray is reachable")
            await memo.ray.wait(run)
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
        await asyncio.to_thread(memo.ray.kill, namespace, name, uid)


def backoff(failures: int) -> float:
    """Seconds before the next attempt: a first failure is retried at once, repeated ones back off."""
    if failures == 0:
        return 0.2  # the actor returned but the run is still Running (e.g. a fenced actor): look again soon
    return 0.0 if failures == 1 else min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (failures - 2))


async def attach(memo: kopf.Memo, catalog: IndexCatalog, ref: TaskRunRef, task_name: str,
                 latest: TaskRunStatus, body: kopf.Body) -> Any:
    """The future of the run's final phase, from the live actor or from a fresh one at a higher epoch."""
    handle = await asyncio.to_thread(memo.ray.find, ref)
    if handle is None:  # only a new actor needs the run resolved (Agent, LLM, tools, the key's Secret)
        spec = await build_spec(memo, catalog, ref, task_name, latest.epoch + 1)
        # Raise the epoch before the actor exists: any older actor still writing is fenced out from now on.
        await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"epoch": spec.epoch})
        handle, actor = await asyncio.to_thread(memo.ray.create, spec)
        await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"actor": actor.to_wire()})
        restored = f"restored from the checkpoint at step {latest.step}" if latest.step else "new run"
        kopf.event(dict(body), type="Normal", reason="ActorStarted" if spec.epoch == 1 else "ActorRestarted",
                   message=f"actor {actor.name} (epoch {spec.epoch}): {restored}")
    else:  # after an operator restart (or a clean return): the run goes on in the same actor
        kopf.event(dict(body), type="Normal", reason="ActorAttached",
                   message=f"supervising the running actor (epoch {latest.epoch})")
    return await asyncio.to_thread(memo.ray.join, handle)


async def build_spec(memo: kopf.Memo, catalog: IndexCatalog, ref: TaskRunRef, task_name: str, epoch: int) -> RunSpec:
    task = catalog.get("Task", ref.namespace, task_name)
    if task is None:
        raise kopf.TemporaryError(f"Task {task_name!r} not found")
    agent_name = task["spec"]["agentRef"]["name"]
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
    return run_spec(ref, agent_name, task["spec"]["userInput"], catalog, key, epoch)


async def set_ray_condition(memo: kopf.Memo, ref: TaskRunRef, latest: TaskRunStatus, available: bool,
                            reason: str, message: str) -> None:
    """RayAvailable: while Ray is unreachable the run says so, and stays Running (nothing is marked Failed)."""
    old = next((c for c in latest.conditions if c.type == "RayAvailable"), None)
    if old is not None and (old.status == "True") == available:
        return
    conditions = with_condition(latest.conditions, "RayAvailable", available, reason, message)
    await memo.kube.patch_status("taskruns", ref.namespace, ref.name, {"conditions": [c.to_wire() for c in conditions]})
