"""The TaskRun's conditions as the reconciler (reconciler.py) keeps them: pure functions of the status (and what
was observed), each returning the status itself when nothing changes."""
from __future__ import annotations

from datetime import datetime

from kubechain.api.v1alpha1 import ConditionType, Phase, Reason, TaskRunStatus
from kubechain.api.v1alpha1.common import with_condition

from . import effects as do
from .lifecycle import response_problems
from .observation import Observed


def ray_available(status: TaskRunStatus, now: datetime, available: bool,
                   message: str = "Ray is reachable") -> TaskRunStatus:
    """RayAvailable: while Ray is unreachable the run says so, and stays Running (nothing is marked Failed)."""
    old = next((c for c in status.conditions if c.type == ConditionType.RAY_AVAILABLE), None)
    if old is not None and (old.status == "True") == available:
        return status
    reason = Reason.CONNECTED if available else Reason.UNREACHABLE
    return status.model_copy(update={"conditions": with_condition(
        status.conditions, ConditionType.RAY_AVAILABLE, available, reason, message, now=now)})


def succeeded(status: TaskRunStatus, now: datetime) -> TaskRunStatus:
    if not status.phase_history:
        return status
    last = status.phase_history[-1]
    ok = True if status.phase is Phase.COMPLETED else False if status.phase is Phase.FAILED else None
    old = next((c for c in status.conditions if c.type == ConditionType.SUCCEEDED), None)
    if old is not None and old.reason == last.reason and old.status == ("Unknown" if ok is None else str(ok)):
        return status
    return status.model_copy(update={"conditions": with_condition(
        status.conditions, ConditionType.SUCCEEDED, ok, last.reason, last.message or last.phase.value, now=now)})


def llm_available(status: TaskRunStatus, now: datetime) -> tuple[TaskRunStatus, do.PostEvent | None]:
    """Condition LLMAvailable from status.llmRetry (the actor's): False while the run rides out failed requests,
    True again once the LLM answers (a run that gave up keeps False); an Event when it flips, not per attempt."""
    retry, old = status.llm_retry, next((c for c in status.conditions if c.type == ConditionType.LLM_AVAILABLE), None)
    if retry is not None and (old is None or old.status != "False" or old.reason != retry.reason):
        message = f"{retry.last_error[:500]}; retrying (attempt {retry.attempts + 1} at {retry.retry_at})"
        event = do.PostEvent("Warning", retry.reason, message) if old is None or old.status != "False" else None
        return status.model_copy(update={"conditions": with_condition(
            status.conditions, ConditionType.LLM_AVAILABLE, False, retry.reason, message, now=now)}), event
    if retry is None and old is not None and old.status == "False" and status.phase is not Phase.FAILED:
        return status.model_copy(update={"conditions": with_condition(
            status.conditions, ConditionType.LLM_AVAILABLE, True, Reason.ANSWERING, "the LLM answers", now=now)}), \
            do.PostEvent("Normal", Reason.LLM_RECOVERED, status.message or "the LLM answers again")
    return status, None


def context_store_available(status: TaskRunStatus, now: datetime) -> TaskRunStatus:
    """Condition ContextStoreAvailable from status.contextStoreWait (the actor's, which also posts the Events):
    False while the actor waits for its external store, True again once it answers; absent for runs that never
    waited (most keep their chunks in ConfigMaps)."""
    wait = status.context_store_wait
    old = next((c for c in status.conditions if c.type == ConditionType.CONTEXT_STORE_AVAILABLE), None)
    message = f"{wait.message[:500]}; waiting until {wait.until}" if wait is not None else ""
    if wait is not None and (old is None or old.status != "False" or old.message != message):
        return status.model_copy(update={"conditions": with_condition(
            status.conditions, ConditionType.CONTEXT_STORE_AVAILABLE, False, Reason.CONTEXT_STORE_UNAVAILABLE,
            message, now=now)})
    if wait is None and old is not None and old.status == "False":
        return status.model_copy(update={"conditions": with_condition(
            status.conditions, ConditionType.CONTEXT_STORE_AVAILABLE, True, Reason.CONTEXT_STORE_RECOVERED,
            "the context store answers", now=now)})
    return status


def responses_valid(status: TaskRunStatus, seen: Observed, now: datetime) -> tuple[TaskRunStatus, str]:
    """Condition ResponsesValid for replies that are refused (they change nothing; absent until a reply is), and
    the message of a refusal that is new (for a Warning)."""
    if not seen.parsed.responses:
        return status, ""
    problems = response_problems(seen.status, seen.parsed.responses, sealed=seen.status.sealed_context.tool_calls > 0)
    old = next((c for c in status.conditions if c.type == ConditionType.RESPONSES_VALID), None)
    reason, message = ((Reason.REFUSED, "; ".join(problems)[:1000]) if problems
                       else (Reason.ACCEPTED, "every reply is accepted"))
    if (old is None and not problems) or (old is not None and (old.reason, old.message) == (reason, message)):
        return status, ""
    return status.model_copy(update={"conditions": with_condition(
        status.conditions, ConditionType.RESPONSES_VALID, not problems, reason, message, now=now)}), \
        message if problems else ""
