"""The TaskRun effects applier: the only TaskRun code that calls Kubernetes or Ray or posts Events.

`apply()` writes the decision's status (only the fields that changed, once), then carries out its effects in
order (kubechain/core/effects.py says what each means). A guarded write that loses a race (someone wrote the
run since it was observed) applies nothing and answers None: the caller observes again and decides anew.
"""
from __future__ import annotations

import time

import asyncio
from dataclasses import dataclass
from typing import Any, assert_never

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from kubechain.api.runspec import ForkPlan, RunCaps, RunSpec, TaskRunRef, secret_key
from kubechain.api.v1alpha1 import GROUP, VERSION, AgentSpec, Phase, Reason, TaskRunSpec, TaskRunStatus
from kubechain.core import effects as do
from kubechain.core.codetools import is_code_tool
from kubechain.core.naming import ACTOR_ACCOUNT
from kubechain.core.observation import (ActorAbsent, ActorCreated, ActorFact, ActorFound, ActorLost, ActorPrepared,
                                        ActorQueued, ActorReturned, ActorWedged, CannotStart, Decision, Observed, RayDown)
from kubechain.core.resolve import agent_readiness, parse, run_spec

from ... import codetools, contextstore
from ...credentials import keep_renewed
from ...metrics import PHASES, RECOVERIES, STORED, TRANSITIONS
from ...raygateway import STANDBY_PREFIX, ActorDied, ActorUnresponsive, RayUnavailable
from ...settings import LimitSettings, ray_tool_limits
from ...state import OperatorState
from ..catalog import IndexCatalog
from .observe import agent_and_input
from .queue import storage_caps, wake_admitted


LINE_PATIENCE_SECONDS = 2.0  # a run waits this long in the actor line before it says so (most waits are shorter)


@dataclass(frozen=True)
class Applied:
    fact: ActorFact | None = None  # what an actor effect answered (the supervisor's next fact)
    exit: bool = False             # the daemon is done with this run


def status_patch(old: TaskRunStatus, new: TaskRunStatus) -> dict[str, Any]:
    """A merge patch of the top-level fields that differ (null: removed)."""
    if new is old:
        return {}
    patch: dict[str, Any] = {}
    for name, info in type(new).model_fields.items():
        if getattr(old, name) != getattr(new, name):
            patch[info.alias or name] = new.to_wire(include={name}).get(info.alias or name)
    return patch


class Applier:
    """Applies decisions about one run. A supervisor's applier also holds the handle of the run's actor."""

    def __init__(self, state: OperatorState, ref: TaskRunRef, indexes: dict[str, Any],
                 stopped: kopf.DaemonStopped | None = None):
        self.state, self.ref, self.indexes, self.stopped = state, ref, indexes, stopped
        self.handle: Any = None  # the actor found or created (a supervisor's)
        self.actor = ""          # its name
        self.waiter: Any = None  # its place in the actor line while it waits for an actor (actorpool.py)
        self._granted = asyncio.Event()

    @property
    def body(self) -> dict[str, Any]:
        """What kopf.event() needs to post an Event about the run."""
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskRun",
                "metadata": {"namespace": self.ref.namespace, "name": self.ref.name, "uid": self.ref.uid}}

    async def apply(self, seen: Observed, decision: Decision, version: str | None = None) -> Applied | None:
        if patch := status_patch(seen.status, decision.status):
            try:
                written = await self.state.kube.patch_status("taskruns", self.ref.namespace, self.ref.name, patch,
                                                             version=version if decision.guarded else None)
            except Exception:
                if decision.holds_slot:
                    self.state.scheduled.pop(self.ref.uid, None)  # not started: its slot is free again
                raise
            if not written:
                if decision.holds_slot:
                    self.state.scheduled.pop(self.ref.uid, None)
                if decision.guarded:
                    return None
        if self.ref.uid in self.state.retrying and (decision.status.llm_retry is None
                                                    or decision.status.phase is not Phase.RUNNING):
            self.state.retrying.discard(self.ref.uid)  # the LLM answered (or the run left Running): turn over
            if decision.status.phase is Phase.RUNNING:  # answered again: the agent's other runs need no turn
                self.state.answered[(self.ref.namespace, decision.status.agent)] = time.monotonic()
        applied = Applied()
        for effect in decision.effects:
            applied = await self._one(effect, seen) or applied
            if applied.exit:
                break
        return applied

    async def _one(self, effect: do.Effect, seen: Observed) -> Applied | None:
        state, ref = self.state, self.ref
        match effect:
            case do.PostEvent(type=type_, reason=reason, message=message):
                kopf.event(self.body, type=type_, reason=reason, message=message)
            case do.CreateChild(body=body, message=message):
                if await state.kube.create("taskruns", ref.namespace, body):
                    kopf.event(self.body, type="Normal", reason="Delegated", message=message)
            case do.CreateJob(body=body, message=message):
                if await state.kube.create_job(ref.namespace, body):
                    kopf.event(self.body, type="Normal", reason="ToolJobCreated", message=message)
            case do.DeleteJob(name=name):
                await state.kube.delete_job(ref.namespace, name)
            case do.CancelChild(name=name):
                await state.kube.patch("taskruns", ref.namespace, name, {"spec": {"cancel": True}})
            case do.LabelRun(labels=labels):
                await state.kube.patch("taskruns", ref.namespace, ref.name, {"metadata": {"labels": dict(labels)}})
            case do.DeleteRun():
                await state.kube.delete("taskruns", ref.namespace, ref.name, ref.uid)
            case do.DropContext(chunks=chunks):
                # In the background: the status write before it ends the run's clock, and kopf cancels the daemon.
                # A deletion cut short (the operator stopped) leaves chunks that go with the run (owner references,
                # or the rows' deletion with the run).
                if (where := seen.status.sealed_context.store) is not None:
                    state.in_background(contextstore.delete_rows(state.kube, ref.uid, where))
                else:
                    state.in_background(state.kube.delete_chunks(ref.namespace, ref.name, chunks))
            case do.Wake(name=name, reason=reason):
                await state.kube.wake("taskruns", ref.namespace, name or ref.name, reason=reason)
            case do.WakeAdmitted():
                await wake_admitted(state, self.indexes)
            case do.ShowOnTask(task=task, phase=phase, output=output, error=error):
                await state.kube.patch_status("tasks", ref.namespace, task,
                                              {"phase": phase, "output": output, "error": error})
                state.task_phases[(ref.namespace, task)] = phase
            case do.Remember(history=history, phase=phase):
                PHASES.observe(ref.uid, ref.namespace, phase)
                if phase is None:
                    STORED.observe(ref.uid, ref.namespace, None)
                    state.phases.pop(ref.uid, None)
                    state.forget(ref.uid)
                else:
                    state.phases[ref.uid] = (history, Phase(phase))
            case do.CountTransition(phase=phase, reason=reason):
                TRANSITIONS.labels(phase, reason).inc()
            case do.CountRecovery():
                RECOVERIES.labels(ref.namespace).inc()
            case do.PrepareActor(epoch=epoch, inputs=inputs):
                if seen.status.llm_retry is not None:  # its LLM attempt takes a turn (ReconcileSettings.max_retry_starts)
                    state.retrying.add(ref.uid)
                return Applied(await self._prepare(seen, epoch, inputs))
            case do.CreateActor(spec=spec):
                return Applied(await self._create(spec, seen.spec.priority if seen.spec else 0))
            case do.JoinActor(spec=spec):
                fact = await self._join(spec)
                return Applied(fact, exit=fact is None)
            case do.KillActor(name=name):
                try:
                    await asyncio.to_thread(state.ray.kill, ref.namespace, ref.name, ref.uid, name)
                except RayUnavailable:
                    pass  # with the head gone the actor is gone; a raised epoch fences out any other
            case do.DisconnectRay():
                await asyncio.to_thread(state.ray.disconnect)
            case do.Sleep(seconds=seconds):
                if self.stopped is not None:
                    await self.stopped.wait(seconds)
            case do.Exit():
                return Applied(exit=True)
            case _:
                assert_never(effect)
        return None

    # --- Ray ------------------------------------------------------------------------------------------------
    async def look(self, status: TaskRunStatus) -> ActorFact:
        """The supervisor's first question each round: is a live actor on the run? Epoch 0: none was ever
        started (the epoch is raised before one is), so there is none to find."""
        if not status.epoch:
            return ActorAbsent()
        name = status.actor.name if status.actor else None
        try:
            handle = await asyncio.to_thread(self.state.ray.find, self.ref, name)
        except RayUnavailable as exc:
            return RayDown(str(exc))
        if handle is None:
            return ActorAbsent()
        self.handle, self.actor = handle, name or ""
        return ActorFound(self.actor)

    async def _prepare(self, seen: Observed, epoch: int, inputs: dict[str, Any]) -> ActorFact:
        """The RunSpec of a new actor: Task -> Agent -> LLM, tools, the key and the tools' Secrets."""
        catalog, ref, spec = IndexCatalog(self.indexes), self.ref, seen.parsed
        found = agent_and_input(catalog, ref.namespace, spec, seen.status.agent)
        if found is None:
            return CannotStart(f"Task {spec.task_ref.name!r} not found")
        agent_name, user_input = found
        agent = catalog.get("Agent", ref.namespace, agent_name)
        agent_spec, _ = parse(AgentSpec, (agent or {}).get("spec") or {})
        # Not the Agent's Ready verdict: a delegate target that went away makes it not Ready, and then only that
        # delegation fails (as a tool error) while a started run goes on.
        if agent is None or agent_spec is None or not agent_readiness(ref.namespace, agent_spec, catalog,
                                                                        delegates=False, started=True).ready:
            return CannotStart(f"Agent {agent_name!r} is not ready: cannot start an actor")
        llm = catalog.get("LLM", ref.namespace, agent_spec.llm_ref.name) or {"spec": {}}
        secrets: dict[tuple[str, str], str] = {}
        wanted = {(r["name"], r["key"]): "the LLM's API key" for r in [llm["spec"].get("apiKeySecretRef")] if r}
        run = _run_spec(seen, spec, agent_name, user_input, catalog, epoch, inputs, self.state, self.indexes)
        for tool in run.tools:
            for pair in tool.secret_refs():
                wanted.setdefault(pair, f"tool {tool.name!r}")
        for (name, key), user in sorted(wanted.items()):
            secret = await self.state.kube.secret_value(ref.namespace, name, key)
            if secret.problem:  # it never comes by waiting: the run fails rather than hold its slot retrying
                return CannotStart(f"{secret.problem} (needed by {user})", final=Reason.SECRET_NOT_FOUND)
            secrets[(name, key)] = secret.value
        if key_ref := llm["spec"].get("apiKeySecretRef"):
            run.api_key = SecretStr(secrets[(key_ref["name"], key_ref["key"])])
        for tool in run.tools:
            for name, key in tool.secret_refs():
                run.secrets[secret_key(name, key)] = SecretStr(secrets[(name, key)])
        run.context_store, problem = await contextstore.for_run(self.state.kube, self.state.settings.storage,
                                                                ref.namespace, spec.context_storage_ref,
                                                                seen.status.sealed_context.store)
        if problem:  # a missing Secret (or key) does not come by waiting either
            return CannotStart(f"{problem} (needed by spec.contextStorageRef)", final=Reason.SECRET_NOT_FOUND)
        if run.fork is not None:  # its source's chunks may be in an external store: the fork's actor reads them
            run.fork.source_store, problem = await contextstore.for_fork_source(
                self.state.kube, self.state.settings.storage, ref.namespace, run.fork.source.name)
            if problem:
                return CannotStart(f"{problem} (needed to read the source of spec.forkOf)",
                                   final=Reason.SECRET_NOT_FOUND)
        if any(is_code_tool(t.execution) for t in run.tools):  # the actor checks them again before each runs
            run.code_tools = await codetools.policy(self.state.kube, self.state.settings.code_tools, ref.namespace)
        if self.state.credentials is not None:
            try:
                run.kube = await self.state.credentials.issue(ref.namespace)
            except ApiException as exc:  # e.g. the operator lacks the rights of kuberay/base/operator-rbac.yaml
                return CannotStart(f"cannot issue the actor's credentials (ServiceAccount {ACTOR_ACCOUNT} in "
                                   f"{ref.namespace}): {exc.status} {exc.reason}")
        return ActorPrepared(run)

    async def _create(self, spec: RunSpec, priority: int) -> ActorFact:
        """The run's actor, once the actor line grants it one (at once, unless every start is taken and no pooled
        actor is free): waited for here, on this loop, never in a thread; after LINE_PATIENCE_SECONDS the run says
        so (ActorQueued) and waits on in its place. The supervisor's stop ends the wait (`close` withdraws)."""
        pool = self.state.ray.pool
        if self.waiter is None:
            loop, self._granted = asyncio.get_running_loop(), asyncio.Event()

            def wake() -> None:  # from the thread that freed what the run gets
                if not loop.is_closed():
                    loop.call_soon_threadsafe(self._granted.set)

            self.waiter = pool.ask(self.ref.namespace, priority, wake)
        if not self.waiter.granted:
            waits = [asyncio.ensure_future(self._granted.wait())]
            if self.stopped is not None:
                waits.append(asyncio.ensure_future(self.stopped.wait()))
            try:
                await asyncio.wait(waits, timeout=LINE_PATIENCE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            self._granted.clear()
            if not self.waiter.granted:  # (set under the pool's lock; a stale False only waits one more round)
                return ActorQueued(spec, pool.starts()[1])
        waiter, self.waiter = self.waiter, None
        try:
            self.handle, ref = await asyncio.to_thread(self.state.ray.create, spec, waiter)
        except RayUnavailable as exc:
            return RayDown(str(exc))
        self.actor = ref.name
        return ActorCreated(ref, spec)

    def close(self) -> None:
        """The supervisor is done: a place it held in the actor line (and what it was granted) goes on."""
        if self.waiter is not None:
            self.state.ray.pool.withdraw(self.waiter)
            self.waiter = None

    async def _join(self, spec: RunSpec | None) -> ActorFact | None:
        """Join the actor's run and wait for it; None when the supervisor is stopped first."""
        try:
            return await self._joined(spec)
        finally:  # the actor returned (e.g. let go of the run for a back-off) or was lost: its LLM attempt is over
            self.state.retrying.discard(self.ref.uid)

    async def _joined(self, spec: RunSpec | None) -> ActorFact | None:
        ray, renewing = self.state.ray, None
        try:
            run = await asyncio.to_thread(ray.join, self.handle, spec)
            if self.actor.startswith(STANDBY_PREFIX):
                self.state.in_background(recycle_when_done(self.state, self.actor, self.handle, run))
            if self.state.credentials is not None:
                renewing = asyncio.create_task(keep_renewed(self.state.credentials, ray, self.handle, self.ref,
                                                            spec.kube if spec else None))
            if not await until_stopped(ray.wait(run, self.handle), self.stopped):  # pinging the actor meanwhile
                return None
        except ActorDied as exc:
            return ActorLost(str(exc))
        except ActorUnresponsive as exc:
            return ActorWedged(str(exc))
        except RayUnavailable as exc:
            return RayDown(str(exc))
        finally:
            if renewing is not None:
                renewing.cancel()
        return ActorReturned()


def _run_spec(seen: Observed, spec: TaskRunSpec, agent: str, user_input: str, catalog: IndexCatalog, epoch: int,
              inputs: dict[str, Any], state: OperatorState, indexes: dict[str, Any]) -> RunSpec:
    run = run_spec(seen.ref, agent, user_input, catalog, None, epoch, traceparent=seen.status.traceparent,
                   max_turns=spec.max_turns, max_parallel_tool_calls=spec.max_parallel_tool_calls,
                   lineage=spec.parent.agents if spec.parent else [], inputs=inputs,
                   max_delegation_depth=state.settings.reconcile.max_delegation_depth,
                   json_logs=state.settings.json_logs, caps=run_caps(state.settings.limits,
                                                                    storage_caps(state, indexes, seen.ref.namespace)),
                   local_tool_timeout_seconds=state.settings.tools.local_timeout_seconds)
    run.budget = spec.budget
    if spec.fork_of is not None and seen.status.forked_from is not None:  # pinned before the run was admitted
        source = TaskRunRef(namespace=seen.ref.namespace, name=spec.fork_of.name, uid=seen.status.forked_from.uid)
        run.fork = ForkPlan(source=source, step=spec.fork_of.step, input=spec.fork_of.input)
    return run


def run_caps(limits: LimitSettings, stored: tuple[int, str] = (0, "")) -> RunCaps:
    """The operator's limits that the actor enforces on each reply, and the run's storage allowance."""
    return RunCaps(tool_calls_per_reply=limits.tool_calls_per_reply, child_runs_per_turn=limits.child_runs_per_turn,
                   journal_bytes=limits.journal_bytes, ray=ray_tool_limits(limits), stored_bytes=stored[0],
                   stored_source=stored[1])


async def recycle_when_done(state: OperatorState, actor: str, handle: Any, run: Any) -> None:
    """A pooled actor goes back to the pool once its run returns, even after kopf stopped the run's daemon
    (the watch event of the run's last phase often arrives before the actor's return value)."""
    try:
        await state.ray.wait(run)
    except (ActorDied, RayUnavailable):
        return
    await asyncio.to_thread(state.ray.recycle, actor, handle)


async def until_stopped(work: Any, stopped: kopf.DaemonStopped | None) -> bool:
    """Await `work` unless the daemon is asked to stop first; True when the work finished (errors raise)."""
    task = asyncio.ensure_future(work)
    if stopped is None:
        await task
        return True
    stop = asyncio.ensure_future(stopped.wait())
    done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stop):
        if pending not in done:
            pending.cancel()
    if task in done:
        task.result()
        return True
    return False
