"""Runs that cannot progress say why, once, and end; the reconciler (reconciler.py) asks here.

A run that waits for something that may never come is never silent about it: its `status.message` says what it
waits for, condition Stalled is True with the reason (TaskNotFound, AgentNotFound, AgentNotReady, CannotStart;
kstatus' convention, beside Succeeded, which keeps following the phase), and one Warning Event is posted when
that reason is new, not on every retry. Its timeoutSeconds still ends it (a run that never started counts from
its creation, lifecycle.stop_for). Stalled turns False once the run starts an actor. What can never come ends
the run or the call at once instead of waiting:
- a child run whose Agent does not exist fails (AgentNotFound): its parent must not wait for it forever;
- a delegate call whose Agent does not exist when the operator would create its child, or past the runs its
  delegation tree may hold, fails as a tool error (the parent resumes with it; no child run is created);
- a run whose tools need a Secret (key) that does not exist fails (SecretNotFound) instead of holding its slot
  while it retries.
"""
from __future__ import annotations

from datetime import datetime

from kubechain.api.v1alpha1 import CallState, ConditionType, Phase, Reason, TaskRunStatus, WaitingFor
from kubechain.api.v1alpha1.common import with_condition

from . import effects as do
from .lifecycle import enter
from .observation import Observed


def blocked(status: TaskRunStatus, reason: Reason, message: str, now: datetime) -> tuple[TaskRunStatus, tuple[do.Effect, ...]]:
    """`status` saying why it cannot progress (message, condition Stalled=True with `reason`), and a Warning Event
    if the reason is new."""
    old = next((c for c in status.conditions if c.type == ConditionType.STALLED), None)
    if old is not None and (old.status, old.reason, old.message) == ("True", reason, message) \
            and status.message == message:
        return status, ()
    said = status.model_copy(update={"message": message, "conditions": with_condition(
        status.conditions, ConditionType.STALLED, True, reason, message, now=now)})
    new = old is None or old.status != "True" or old.reason != reason
    return said, (do.PostEvent("Warning", reason, message),) if new else ()


def unblocked(status: TaskRunStatus, now: datetime) -> TaskRunStatus:
    """Stalled=False once the run progresses again (absent if it never stalled)."""
    old = next((c for c in status.conditions if c.type == ConditionType.STALLED), None)
    if old is None or old.status != "True":
        return status
    return status.model_copy(update={"conditions": with_condition(
        status.conditions, ConditionType.STALLED, False, Reason.PROGRESSING, f"resolved: {old.message}", now=now)})


def failed(status: TaskRunStatus, reason: Reason, message: str, now: datetime) -> tuple[TaskRunStatus, tuple[do.Effect, ...]]:
    """pending|running -> failed: what the run waits for can never come. No actor holds it (none was started)."""
    ended = enter(status.model_copy(update={"error": message}), Phase.FAILED, reason, message, now=now)
    return ended, (do.PostEvent("Warning", reason, message),)


def refused_delegations(seen: Observed) -> dict[str, str]:
    """Waiting delegate calls, by key, whose child run was not created yet and must not be: their tool error. Its
    Agent does not exist (a child that exists already fails on its own, AgentNotFound, if its Agent went away), or
    the delegation tree holds its most runs (KUBECHAIN_MAX_RUNS_PER_TREE: depth alone allows fan-out^depth)."""
    new = [r for r in seen.status.tool_call_history if r.state is CallState.WAITING
           and r.waiting_for is WaitingFor.CHILD_RUN and r.child_run not in seen.children]
    refused = {r.key: (f"delegation refused: Agent {r.delegated_to!r} does not exist in namespace "
                       f"{seen.ref.namespace!r}; no child run was created")
               for r in new if r.delegated_to in seen.absent_agents}
    room = seen.max_tree_runs - seen.tree_runs if seen.max_tree_runs else len(new)
    for record in [r for r in new if r.key not in refused][max(room, 0):]:
        refused[record.key] = (f"not run: the delegation tree holds {seen.tree_runs} runs and may hold at most "
                               f"{seen.max_tree_runs} (KUBECHAIN_MAX_RUNS_PER_TREE); no child run was created")
    return refused
