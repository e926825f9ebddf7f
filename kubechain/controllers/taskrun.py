"""TaskRun: the operator's half of the state machine (kubechain/taskrun_lifecycle.py).

Pending → Running: resolve Task → Agent → LLM/tools, record the transition, start the actor.
Running (e.g. after an operator restart): make sure the actor exists; an existing one is re-attached,
never duplicated (named detached actors, get_if_exists).
"""
from __future__ import annotations

import asyncio
from typing import Any

import kopf

from kubechain.api.runspec import RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, TaskRunStatus
from kubechain.naming import actor_name
from kubechain.resolve import run_spec
from kubechain.taskrun_lifecycle import EnsureActor, Nothing, Observation, Schedule, Wait, decide, enter

from .catalog import IndexCatalog


def observe(catalog: IndexCatalog, namespace: str, task_name: str) -> Observation:
    task = catalog.get("Task", namespace, task_name)
    if task is None:
        return Observation(task_found=False)
    agent_name = (task["spec"].get("agentRef") or {}).get("name", "")
    agent = catalog.get("Agent", namespace, agent_name)
    status = (agent or {}).get("status") or {}
    message = status.get("message", "") if agent else "not found"
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
            raise kopf.TemporaryError(secret.problem, delay=memo.settings.reconcile.pending_retry_seconds)
        key = secret.value
    return run_spec(ref, agent_name, task["userInput"], catalog, key)


@kopf.on.resume(GROUP, VERSION, "taskruns")
@kopf.on.create(GROUP, VERSION, "taskruns")
async def reconcile(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
                    memo: kopf.Memo, **kwargs: Any) -> None:
    current = TaskRunStatus.model_validate(dict(status))
    catalog = IndexCatalog(kwargs)
    task_name = spec["taskRef"]["name"]
    seen = observe(catalog, namespace, task_name)
    ref = TaskRunRef(namespace=namespace, name=name, uid=uid)
    match decide(current, seen):
        case Wait(message=message):
            if current.message != message:
                await memo.kube.patch_status("taskruns", namespace, name, {"message": message})
            raise kopf.TemporaryError(message, delay=memo.settings.reconcile.pending_retry_seconds)
        case Schedule():
            spec_ = await build_spec(memo, catalog, ref, task_name)
            running = enter(current, Phase.RUNNING, "ActorScheduled", "the actor is starting")
            # Written before the actor exists: the actor loads this status and owns it from then on.
            await memo.kube.patch_status("taskruns", namespace, name, {
                **running.model_dump(mode="json", by_alias=True, include={"phase", "message", "phase_history"}),
                "agent": seen.agent_name,
                "actor": {"name": actor_name(namespace, name, uid), "namespace": memo.settings.ray.namespace}})
            await start_actor(memo, spec_, namespace, name)
            kopf.info(dict(body), reason="ActorScheduled", message=f"Running on Ray actor {actor_name(namespace, name, uid)}")
        case EnsureActor():
            await start_actor(memo, await build_spec(memo, catalog, ref, task_name), namespace, name)
        case Nothing():
            pass


async def start_actor(memo: kopf.Memo, spec: RunSpec, namespace: str, name: str) -> None:
    try:
        actor = await asyncio.to_thread(memo.ray.ensure_actor, spec)
    except Exception as exc:  # Ray unreachable or refusing: the phase stays, the handler retries
        raise kopf.TemporaryError(f"cannot start the actor: {exc}", delay=memo.settings.reconcile.pending_retry_seconds)
    await memo.kube.patch_status("taskruns", namespace, name, {"actor": actor.to_wire()})
