"""The TaskRun state machine, in one place.

    Pending ──Scheduled──▶ Running ──FinalAnswer──▶ Completed
                            │  ▲ ▲
          ask_human or a    │  │ └──ChildrenFinished── Delegating ◀──delegate call(s)──┐
          call to approve   │  └──InputReceived── PausedForUserInput ◀──────────────────┤
                            └──LLMError / MaxTurnsExceeded / InternalError──▶ Failed    │
                            └───────────────────────────────────────────────────────────┘
    any phase not ended ──Cancelled (spec.cancel) / Timeout (spec.timeoutSeconds)──▶ Failed

The operator owns Pending → Running (its supervisor starts the actor), the way back from waiting
(PausedForUserInput / Delegating → Running, once every waiting call has what it waits for) and the
stops (Cancelled, Timeout: it raises the epoch, so a live actor is fenced out, and kills it). The
actor owns every edge out of Running, and holds no process while the run waits. The operator's half
is `kubechain/core/reconciler.py`, a pure function of what it observed; this module holds what both
halves share: the legal edges, `enter()` (which records any transition the same way for both), the
run's deadlines and what its waiting calls have received.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kubechain.api.runspec import CallInput
from kubechain.api.v1alpha1 import (CallState, HumanResponse, Phase, PhaseTransition, Reason, RunLimits,
                                    TaskRunStatus, ToolCallRecord, Usage, WaitingFor)
from kubechain.api.v1alpha1.common import parse_rfc3339, rfc3339

WAITING_PHASES = frozenset({Phase.PAUSED_FOR_USER_INPUT, Phase.DELEGATING})
EDGES: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.RUNNING, Phase.FAILED}),
    Phase.RUNNING: frozenset({Phase.COMPLETED, Phase.FAILED, *WAITING_PHASES}),
    Phase.PAUSED_FOR_USER_INPUT: frozenset({Phase.RUNNING, Phase.FAILED}),
    Phase.DELEGATING: frozenset({Phase.RUNNING, Phase.FAILED}),
    Phase.COMPLETED: frozenset(),
    Phase.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def enter(status: TaskRunStatus, phase: Phase, reason: str, message: str = "", *, now: datetime) -> TaskRunStatus:
    """`status` moved to `phase` at `now`, with the transition appended to phaseHistory."""
    if phase not in EDGES[status.phase]:
        raise IllegalTransition(f"{status.phase.value} -> {phase.value} ({reason})")
    history = [*status.phase_history, PhaseTransition(phase=phase, time=rfc3339(now), reason=reason, message=message)]
    return status.model_copy(update={"phase": phase, "message": message, "phase_history": history})


def started_at(status: TaskRunStatus) -> datetime | None:
    """When the run first entered Running: timeouts count from here, across restarts and pauses."""
    return next((parse_rfc3339(t.time) for t in status.phase_history if t.phase is Phase.RUNNING), None)


def finished_at(status: TaskRunStatus) -> datetime | None:
    if not status.phase.terminal or not status.phase_history:
        return None
    return parse_rfc3339(status.phase_history[-1].time)


@dataclass(frozen=True)
class Stop:
    """End the run now, as Failed with this reason."""
    reason: Reason
    message: str


def stop_for(limits: RunLimits, cancel: bool, status: TaskRunStatus, now: datetime,
             created: datetime | None = None) -> Stop | None:
    """Whether a run that has not ended must be stopped now: cancelled, or past its deadline. The timeout counts
    from the first start; for a run that never started (`created`: its creationTimestamp), from its creation, so a
    run held Pending (a missing Task or Agent, the queue) ends at its timeout too."""
    if status.phase.terminal:
        return None
    if cancel:
        return Stop(Reason.CANCELLED, "cancelled: spec.cancel is true")
    start = started_at(status)
    if limits.timeout_seconds and start and now >= start + timedelta(seconds=limits.timeout_seconds):
        return Stop(Reason.TIMEOUT, f"timed out: still not finished {limits.timeout_seconds} s after it started")
    if limits.timeout_seconds and not start and created and now >= created + timedelta(seconds=limits.timeout_seconds):
        return Stop(Reason.TIMEOUT, f"timed out: still not started {limits.timeout_seconds} s after it was created "
                                    f"({status.message or 'Pending'})")
    return None


def next_deadline(limits: RunLimits, status: TaskRunStatus, created: datetime | None = None) -> datetime | None:
    """The next moment something is due without any event: the run's timeout (from its creation while it never
    started), an approval's expiry, or (for an ended run) its chunks' drop or its deletion."""
    if status.phase.terminal:
        return min((t for t in (context_drop_at(limits, status), deletion_at(limits, status)) if t), default=None)
    moments = [parse_rfc3339(r.expires_at) for r in status.tool_call_history if r.state is CallState.WAITING and r.expires_at]
    if limits.timeout_seconds and (start := started_at(status) or created):
        moments.append(start + timedelta(seconds=limits.timeout_seconds))
    return min(moments, default=None)


def deletion_at(limits: RunLimits, status: TaskRunStatus) -> datetime | None:
    """When an ended run is deleted: ttlSecondsAfterFinished after it ended (0 or none: never). The operator's
    default is filled in before (kubechain/core/limits.py with_retention)."""
    end = finished_at(status) if status.phase.terminal else None
    ttl = limits.ttl_seconds_after_finished
    return end + timedelta(seconds=ttl) if end and ttl else None


def context_drop_at(limits: RunLimits, status: TaskRunStatus) -> datetime | None:
    """When an ended run's sealed chunks are deleted (contextRetentionSeconds after it ended; 0 or none: never),
    if it has chunks not dropped yet."""
    end = finished_at(status) if status.phase.terminal else None
    keep, sealed = limits.context_retention_seconds, status.sealed_context
    return end + timedelta(seconds=keep) if end and keep and sealed.chunks and not sealed.dropped_at else None


def llm_retry_at(status: TaskRunStatus) -> datetime | None:
    """When a run riding out failed LLM requests asks again (status.llmRetry, written by its actor)."""
    return parse_rfc3339(status.llm_retry.retry_at) if status.llm_retry else None


@dataclass(frozen=True)
class ChildOutcome:
    """What the operator knows of a child TaskRun: its phase (None: not created yet), output and error, and what its
    tree spent (status.treeUsage, treeCost, currency)."""
    phase: Phase | None
    output: str = ""
    error: str = ""
    usage: Usage | None = None
    cost: float | None = None
    currency: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """What the operator knows of a container call's Job: whether it finished, and its result or error."""
    finished: bool
    succeeded: bool = False
    text: str = ""


@dataclass(frozen=True)
class Gathered:
    inputs: dict[str, CallInput] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # what is still awaited, one line per call


def _valid(record: ToolCallRecord, response: HumanResponse | None) -> bool:
    if response is None:
        return False
    if record.waiting_for is WaitingFor.ANSWER:
        return bool(response.answer)
    return record.waiting_for is WaitingFor.APPROVAL and response.approved is not None


def gather_inputs(status: TaskRunStatus, responses: dict[str, HumanResponse], children: dict[str, ChildOutcome],
                  now: datetime, jobs: dict[str, JobOutcome] | None = None,
                  refused: dict[str, str] | None = None) -> Gathered:
    """For each waiting call, its input if it has arrived: an answer, a decision (an expired approval is a
    rejection), a child run that ended, or a Job that finished; `refused` calls fail with that text. Replies,
    `jobs`, `refused` and the inputs are keyed by the call's key (ToolCallRecord.key), never by the LLM's call id
    alone, which may repeat across steps."""
    gathered = Gathered()
    for record in status.tool_call_history:
        if record.state is not CallState.WAITING:
            continue
        if (why := (refused or {}).get(record.key)) is not None:  # it can never get it (blocking.py)
            gathered.inputs[record.key] = CallInput(accepted=False, text=why)
            continue
        response = responses.get(record.key)
        if record.waiting_for is WaitingFor.CHILD_RUN:
            child = children.get(record.child_run or "") or ChildOutcome(None)
            if child.phase is not None and child.phase.terminal:
                ok = child.phase is Phase.COMPLETED
                text = child.output if ok else f"the delegated run {record.child_run} failed: {child.error}"
                gathered.inputs[record.key] = CallInput(accepted=ok, text=text, usage=child.usage, cost=child.cost,
                                                        currency=child.currency)
            else:
                gathered.missing.append(f"child TaskRun {record.child_run} ({(child.phase or Phase.PENDING).value})")
        elif record.waiting_for is WaitingFor.JOB:
            job = (jobs or {}).get(record.key) or JobOutcome(False)
            if job.finished:
                gathered.inputs[record.key] = CallInput(accepted=job.succeeded, text=job.text)
            else:
                gathered.missing.append(f"Job {record.job} ({record.tool})")
        elif _valid(record, response):
            text = response.answer if record.waiting_for is WaitingFor.ANSWER else response.reason
            gathered.inputs[record.key] = CallInput(accepted=response.approved is not False, text=text or "",
                                                   response=response)
        elif record.expires_at and now >= parse_rfc3339(record.expires_at):
            gathered.inputs[record.key] = CallInput(accepted=False, text="no decision before the approval deadline "
                                                                        f"{record.expires_at}")
        else:
            what = "an answer to" if record.waiting_for is WaitingFor.ANSWER else "approval of"
            gathered.missing.append(f"{what} call {record.id} ({record.tool})")
    return gathered


def response_problems(status: TaskRunStatus, responses: dict[str, HumanResponse], sealed: bool = False) -> list[str]:
    """Replies that are refused, each with why. A reply is accepted once, for a call waiting for a human, under
    the call's key (a reply under the LLM's bare call id is refused, naming the key it must use).
    `sealed`: older calls are out of line, so a call not in the tail may be one of them (then no verdict)."""
    records = {r.key: r for r in status.tool_call_history}
    problems = []
    for key, response in sorted(responses.items()):
        record = records.get(key)
        if record is None:
            if named := [r.key for r in status.tool_call_history if r.id == key and r.state is CallState.WAITING]:
                problems.append(f"{key}: replies are keyed by the call's idempotencyKey, not the LLM's call id: "
                                f"use {', '.join(named)}")
            elif not sealed:
                problems.append(f"{key}: no such tool call in this run")
        elif record.state is CallState.WAITING and record.waiting_for.human:
            if not _valid(record, response):
                need = "an `answer`" if record.waiting_for is WaitingFor.ANSWER else "`approved: true|false`"
                problems.append(f"{key}: this call waits for {need}")
        elif record.response is None:
            problems.append(f"{key}: the call ({record.tool}) is not waiting for a human")
        elif record.response != response:
            problems.append(f"{key}: already answered ({record.response.to_wire()}); the new reply is ignored")
    return problems
