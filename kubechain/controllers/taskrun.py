"""TaskRun: the operator's half of the state machine (kubechain/taskrun_lifecycle.py).

Pending → Running: resolve Task → Agent → LLM/tools, record the transition, start the actor. Runs on
every event of a Pending TaskRun (an Agent turning ready touches its waiting runs) and on a timer.
Running after an operator restart: make sure the actor exists; an existing one is re-attached,
never duplicated (named detached actors, get_if_exists).
"""
from __future__ import annotations

import asyncio
from typing import Any

import kopf

from kubechain.api.runspec import RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, TaskRunStatus
from kubechain.naming import LABEL_AGENT, actor_name
from kubechain.resolve import run_spec
from kubechain.settings import Settings
from kubechain.taskrun_lifecycle import EnsureActor, Nothing, Observation, Schedule, Wait, decide, enter

from .catalog import IndexCatalog

RETRY_SECONDS = Settings().reconcile.pending_retry_seconds


def is_pending(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase", Phase.PENDING.value) == Phase.PENDING.value


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


async def build_spec(memo: kopf.Memo, catalog: IndexCatalog, ref: TaskRunRef, task_name: str) -> RunSpec:
    task = catalog.get("Task", ref.namespace, task_name)["spec"]
    agent_name = task["agentRef"]["name"]
    agent = catalog.get("Agent", ref.namespace, agent_name)["spec"]
    llm = catalog.get("LLM", ref.namespace, agent["llmRef"]["name"])["spec"]
    key = None
    if secret_ref := llm.get("apiKeySecretRef"):
        secret = await memo.kube.secret_value(ref.namespace, secret_ref["name"], secret_ref["key"])
        if secret.problem:
            raise kopf.TemporaryError(secret.problem, delay=RETRY_SECONDS)
        key = secret.value
    return run_spec(ref, agent_name, task["userInput"], catalog, key)


@kopf.on.event(GROUP, VERSION, "taskruns", when=is_pending)
@kopf.timer(GROUP, VERSION, "taskruns", id="retry", when=is_pending, interval=RETRY_SECONDS, initial_delay=RETRY_SECONDS)
@kopf.on.resume(GROUP, VERSION, "taskruns")
async def reconcile(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
                    memo: kopf.Memo, **kwargs: Any) -> None:
    if kwargs.get("type") == "DELETED":
        return
    # Event, timer and resume handlers run concurrently: one reconciliation per TaskRun at a time.
    async with memo.locks.setdefault(uid, asyncio.Lock()):
        current = TaskRunStatus.model_validate(dict(status))
        if uid in memo.scheduled and current.phase is Phase.PENDING:
            return  # our Running write has not come back through the watch yet
        await _reconcile(namespace, name, uid, spec["taskRef"]["name"], current, body, memo, IndexCatalog(kwargs))


async def _reconcile(namespace: str, name: str, uid: str, task_name: str, current: TaskRunStatus,
                     body: kopf.Body, memo: kopf.Memo, catalog: IndexCatalog) -> None:
    seen = observe(catalog, namespace, task_name)
    ref = TaskRunRef(namespace=namespace, name=name, uid=uid)
    match decide(current, seen):
        case Wait(message=message):
            if current.message != message:
                await memo.kube.patch_status("taskruns", namespace, name, {"message": message})
        case Schedule():
            spec = await build_spec(memo, catalog, ref, task_name)
            running = enter(current, Phase.RUNNING, "ActorScheduled", "the actor is starting")
            # Written before the actor exists: the actor loads this status and owns it from then on.
            await memo.kube.patch_status("taskruns", namespace, name, {
                **running.to_wire(include={"phase", "message", "phase_history"}),
                "agent": seen.agent_name,
                "actor": {"name": actor_name(namespace, name, uid), "namespace": memo.settings.ray.namespace}})
            memo.scheduled.add(uid)
            await start_actor(memo, spec, namespace, name)
            kopf.event(dict(body), type="Normal", reason="ActorScheduled", message=f"Running on Ray actor {actor_name(namespace, name, uid)}")
        case EnsureActor():
            await start_actor(memo, await build_spec(memo, catalog, ref, task_name), namespace, name)
        case Nothing():
            pass


async def start_actor(memo: kopf.Memo, spec: RunSpec, namespace: str, name: str) -> None:
    try:
        actor = await asyncio.to_thread(memo.ray.ensure_actor, spec)
    except Exception as exc:  # Ray unreachable or refusing: the phase stays, the handler retries
        raise kopf.TemporaryError(f"cannot start the actor: {exc}", delay=RETRY_SECONDS)
    await memo.kube.patch_status("taskruns", namespace, name, {"actor": actor.to_wire()})
