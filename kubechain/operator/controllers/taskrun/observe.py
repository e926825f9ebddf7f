"""What the TaskRun reconciler decides from: a run's body, read together with the kopf indexes and this process's
books into one `Observed`. No writes; the only waits are for the admission lock (no I/O under it)."""
from __future__ import annotations

import time

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import (CallState, ConditionType, Phase, ReadinessReason, TaskRunSpec, TaskRunStatus,
                                    WaitingFor)
from kubechain.api.v1alpha1.common import parse_rfc3339
from kubechain.core.fork import ForkSource, pinned_and_sound
from kubechain.core.lifecycle import ChildOutcome
from kubechain.core.limits import with_retention
from kubechain.core.naming import LABEL_ROOT_UID, LABEL_TASK
from kubechain.core.observation import ActorFact, Observed, Seen, Target, Trigger
from kubechain.core.resolve import Catalog, parse

from ...state import OperatorState
from ..catalog import IndexCatalog
from .jobs import container_of
from .queue import admit


def ref_of(body: Mapping[str, Any]) -> TaskRunRef:
    meta = body["metadata"]
    return TaskRunRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


ANSWERED_SECONDS = 120.0  # after a run's answer ends an episode, its agent's other runs back off without turns


def observe(trigger: Trigger, body: Mapping[str, Any], state: OperatorState, indexes: dict[str, Any], *,
            status: TaskRunStatus | None = None, actor: ActorFact | None = None, failures: int = 0,
            traceparent: str = "") -> Observed:
    """The run as `body` shows it (`status`: a newer status this process wrote itself), with its neighbours."""
    ref = ref_of(body)
    status = status or TaskRunStatus.model_validate(body.get("status") or {})
    spec, error = parse(TaskRunSpec, dict(body.get("spec") or {}))
    if spec is not None:
        storage = state.settings.storage
        spec = with_retention(spec, storage.ttl_seconds_after_finished, storage.context_retention_seconds)
    task = (body["metadata"].get("labels") or {}).get(LABEL_TASK)
    catalog = IndexCatalog(indexes)
    seen = state.phases.get(ref.uid)
    observed = Observed(
        trigger=trigger, ref=ref, status=status, spec=spec, spec_error=error or "",
        task=task, task_shows=state.task_phases.get((ref.namespace, task)) if task else None,
        seen=Seen(*seen) if seen else None, scheduled=ref.uid in state.scheduled,
        children=children_of(indexes, ref), actor=actor, failures=failures, traceparent=traceparent,
        ray_namespace=state.settings.ray.namespace, created=created_at(body))
    if status.llm_retry is not None and trigger is Trigger.SUPERVISOR:
        back = time.monotonic() - state.answered.get((ref.namespace, status.agent), -ANSWERED_SECONDS) < ANSWERED_SECONDS
        turn = back or ref.uid in state.retrying or len(state.retrying) < state.settings.reconcile.max_retry_starts
        observed = replace(observed, retry_turn=turn)
    if spec is None:
        return observed
    if status.phase is Phase.PENDING:
        if trigger is not Trigger.EVENT:
            return observed
        source = fork_source(indexes, ref.namespace, spec)
        agent = source.agent if source is not None else ""
        return replace(observed, target=target_of(catalog, ref.namespace, spec, agent), fork_source=source)
    jobs = dict(indexes["tool_jobs"].get((ref.namespace, ref.uid), []))
    if status.phase.terminal:
        return replace(observed, jobs=jobs)
    return replace(observed, jobs=jobs, containers=containers_of(catalog, ref.namespace, status, jobs),
                   absent_agents=absent_agents(catalog, ref.namespace, status),
                   tree_runs=tree_size(indexes, ref, body), max_tree_runs=state.settings.limits.runs_per_tree)


def gone(trigger: Trigger, ref: TaskRunRef, state: OperatorState, status: TaskRunStatus) -> Observed:
    """A run that was deleted (or replaced by a new object of its name)."""
    seen = state.phases.get(ref.uid)
    return Observed(trigger=trigger, ref=ref, status=status, spec=None, exists=False,
                    seen=Seen(*seen) if seen else None)


async def with_slot(seen: Observed, state: OperatorState, indexes: dict[str, Any]) -> Observed:
    """A Pending run whose Agent is ready gets its place in the admission plan: admitted (a slot is reserved for
    it), or queued."""
    if seen.target is None or not seen.target.ready or seen.scheduled or seen.spec.cancel:
        return seen
    fork, pinned = seen.parsed.fork_of, seen.status.forked_from
    if fork is not None and not pinned_and_sound(fork, seen.fork_source, pinned.uid if pinned else None):
        return seen  # the reconciler pins the source first, or fails the fork: no slot meanwhile
    async with state.admission_lock:  # no awaits inside: every Pending run's decision takes this lock
        slot = admit(state, indexes, seen.ref.namespace, seen.ref.name, seen.ref.uid)
    return replace(seen, slot=slot)


def children_of(indexes: dict[str, Any], ref: TaskRunRef) -> dict[str, ChildOutcome]:
    return dict(indexes["child_taskruns"].get((ref.namespace, ref.uid), []))


def containers_of(catalog: Catalog, namespace: str, status: TaskRunStatus, jobs: Mapping[str, Any]) -> dict[str, Any]:
    """The container of each waiting container call that has no Job yet (by call key), as the run's Agent
    defines it now."""
    return {r.key: container_of(catalog, namespace, status.agent or "", r.tool) for r in status.tool_call_history
            if r.state is CallState.WAITING and r.waiting_for is WaitingFor.JOB and r.key not in jobs}


def absent_agents(catalog: Catalog, namespace: str, status: TaskRunStatus) -> frozenset[str]:
    """The Agents that waiting delegate calls name and that do not exist (their calls fail, reconciler)."""
    return frozenset(r.delegated_to for r in status.tool_call_history
                     if r.state is CallState.WAITING and r.waiting_for is WaitingFor.CHILD_RUN and r.delegated_to
                     and catalog.get("Agent", namespace, r.delegated_to) is None)


def tree_size(indexes: dict[str, Any], ref: TaskRunRef, body: Mapping[str, Any]) -> int:
    """Runs of the delegation tree this run is in, root included (as the watch has shown them)."""
    root = (body["metadata"].get("labels") or {}).get(LABEL_ROOT_UID) or ref.uid
    return 1 + len(indexes["tree_taskruns"].get((ref.namespace, root), []))


def created_at(body: Mapping[str, Any]) -> datetime | None:
    """metadata.creationTimestamp: a run that never started times out from it."""
    stamp = body["metadata"].get("creationTimestamp")
    return parse_rfc3339(stamp) if stamp else None


def fork_source(indexes: dict[str, Any], namespace: str, spec: TaskRunSpec) -> ForkSource | None:
    """A fork's source run as the index shows it (None: not a fork, or no such run)."""
    if spec.fork_of is None:
        return None
    return next(iter(indexes["fork_sources"].get((namespace, spec.fork_of.name)) or ()), None)


def agent_and_input(catalog: Catalog, namespace: str, spec: TaskRunSpec, fork_agent: str = "") -> tuple[str, str] | None:
    """(agent, user input) of a run: from its Task, or its own spec (child runs); None if the Task is missing. A
    fork runs `fork_agent` (its source's) and has no input of its own: it continues the copied conversation."""
    if spec.fork_of is not None:
        return fork_agent, ""
    if spec.task_ref is None:
        return spec.agent_ref.name, spec.user_input or ""
    task = catalog.get("Task", namespace, spec.task_ref.name)
    if task is None:
        return None
    return (task["spec"].get("agentRef") or {}).get("name", ""), task["spec"].get("userInput", "")


def target_of(catalog: Catalog, namespace: str, spec: TaskRunSpec, fork_agent: str = "") -> Target:
    found = agent_and_input(catalog, namespace, spec, fork_agent)
    if found is None:
        return Target(found=False)
    agent = catalog.get("Agent", namespace, found[0])
    status = (agent or {}).get("status") or {}
    message = (status.get("message") or "not reconciled yet") if agent else "not found"
    reason = next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == ConditionType.READY), "")
    settling = agent is not None and (not status or reason in {r.value for r in ReadinessReason if r.transient})
    return Target(True, found[0], bool(status.get("ready")), message, agent_exists=agent is not None,
                  settling=settling)
