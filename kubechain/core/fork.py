"""Forking a run (TaskRun.spec.forkOf): which part of the source's checkpoint a fork starts from. Pure.

The cut at step N (status.step counts LLM requests; the k-th assistant message of a conversation is step k's
reply, as a step is checkpointed with its reply or not at all):
1. Messages: everything before step N+1's reply, less compaction markers after step N's results (a compaction
   made for step N+1, whose view the fork does not share). Step 0: the system prompt and the user's input.
2. Journal: the calls of steps <= N, re-keyed to the fork's uid (`<uid>/<step>/<call id>`: a run's own keys);
   nothing after N. Step N's calls must all have finished, so the fork starts with a closed journal and its first
   act is an LLM request: a call that was Started (its effects may have happened) or still waits for a child run
   or a Job is never copied, so nothing is run twice. Fork at N-1 to ask for step N again instead.
3. `input` answers step N's one ask_human call (waiting or answered in the source): the fork's journal records it
   Succeeded with that answer, and its tool message says it, in place of the source's answer.
4. What the model is sent (status.context) is kept when every compaction of the source is in the cut, else
   dropped (the fork compacts again if it must: the conversation is whole either way).
5. Usage, cost and limits count the fork's own requests: the source spent the first N steps. status.step
   starts at N, so maxTurns counts the source's steps too (as for a resumed run).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubechain.api.context import COMPACTION_MARKER
from kubechain.api.v1alpha1 import (CallState, ContextState, ForkOf, HumanResponse, Message, Phase, ToolCallRecord,
                                    WaitingFor)

ANSWERED_BY = "kubechain fork"  # HumanResponse.by of the answer a fork's forkOf.input gave


class ForkError(ValueError):
    """The source cannot be forked as asked: the message names the field (spec.forkOf.*) and what to do."""


class CallLike(Protocol):
    @property
    def state(self) -> CallState: ...
    @property
    def waiting_for(self) -> WaitingFor | None: ...


@dataclass(frozen=True)
class StepCall:
    """What the operator's index keeps of a call of a run's latest step (its open calls are never sealed)."""
    state: CallState
    waiting_for: WaitingFor | None = None


@dataclass(frozen=True)
class ForkSource:
    """A TaskRun as a possible fork source: what admission and the operator check a forkOf against."""
    uid: str
    step: int
    agent: str
    phase: Phase
    last_calls: tuple[StepCall, ...] = ()  # the calls of its step `step`


def source_of(uid: str, status: Mapping[str, Any]) -> ForkSource:
    """The summary of a TaskRun's raw status (kopf index: every event of every run, so no model parsing)."""
    step = int(status.get("step") or 0)
    calls = tuple(StepCall(CallState(r.get("state") or CallState.PENDING.value),
                           WaitingFor(r["waitingFor"]) if r.get("waitingFor") else None)
                  for r in status.get("toolCallHistory") or [] if r.get("step") == step)
    return ForkSource(uid, step, status.get("agent") or "", Phase(status.get("phase") or Phase.PENDING.value), calls)


def source_problem(fork: ForkOf, source: ForkSource | None, pinned_uid: str | None = None) -> str | None:
    """Why `fork` cannot start from `source` as the operator sees it now (None: it can, as far as the latest step
    shows: earlier steps are checked again by the fork's actor when it cuts the whole checkpoint)."""
    if source is None:
        return f"spec.forkOf.name: TaskRun {fork.name!r} not found"
    if pinned_uid is not None and source.uid != pinned_uid:
        return f"spec.forkOf.name: TaskRun {fork.name!r} was replaced by another object of that name"
    if not source.agent:
        return f"spec.forkOf.name: TaskRun {fork.name!r} has not started: there is nothing to fork"
    if fork.step > source.step:
        return f"spec.forkOf.step: {fork.step} is beyond TaskRun {fork.name!r}'s step {source.step}"
    if fork.step == source.step and source.phase is Phase.COMPLETED:
        return (f"spec.forkOf.step: step {fork.step} is TaskRun {fork.name!r}'s final answer: fork at step "
                f"{fork.step - 1} to ask for it again")
    if fork.step == source.step:
        return step_problem(source.last_calls, fork)
    return None


def pinned_and_sound(fork: ForkOf, source: ForkSource | None, pinned_uid: str | None) -> bool:
    """A Pending fork may take a slot once its source is pinned (status.forkedFrom) and still forkable."""
    return pinned_uid is not None and source_problem(fork, source, pinned_uid) is None


def step_problem(calls: Sequence[CallLike], fork: ForkOf) -> str | None:
    """Why step N (whose calls are `calls`) cannot be forked at: a call that has not finished, other than the
    ask_human question that forkOf.input answers; or an input with no (or more than one) question to answer."""
    questions = [c for c in calls if c.waiting_for is WaitingFor.ANSWER]
    step, name = fork.step, fork.name
    if fork.input is not None and len(questions) != 1:
        return (f"spec.forkOf.input answers step {step}'s ask_human question: step {step} of TaskRun {name!r} "
                f"asks {len(questions)}")
    open_calls = [c for c in calls if not c.state.finished and not (fork.input is not None and c is questions[0])]
    if not open_calls:
        return None
    states = ", ".join(sorted({c.state.value + (f" for {c.waiting_for.value}" if c.waiting_for else "")
                               for c in open_calls}))
    answer = ("set spec.forkOf.input (kubechain fork --input) to answer its question, or "
              if fork.input is None and any(c.waiting_for is WaitingFor.ANSWER for c in open_calls) else "")
    again = f"fork at step {step - 1} to ask the LLM for step {step} again" if step else "wait"
    return (f"spec.forkOf.step: step {step} of TaskRun {name!r} has calls that have not finished ({states}), "
            f"and a fork never runs a call again: {answer}{again}")


@dataclass(frozen=True)
class Cut:
    """The fork's conversation and journal, and its step and compaction state."""
    messages: list[Message]
    calls: list[ToolCallRecord]
    step: int
    context: ContextState | None


def is_marker(message: Message) -> bool:
    return message.role == "system" and message.name == COMPACTION_MARKER


def cut(messages: list[Message], calls: list[ToolCallRecord], context: ContextState | None, fork: ForkOf,
        source_uid: str, uid: str, now: str) -> Cut:
    """The fork of the source's whole conversation and journal (sealed chunks in front) at forkOf.step, for the
    run of uid `uid`; ForkError if the checkpoint cannot be cut there. `now`: the answer's time (RFC 3339)."""
    replies = [i for i, m in enumerate(messages) if m.role == "assistant"]
    step = fork.step
    if step > len(replies):
        raise ForkError(f"spec.forkOf.step: {step} is beyond TaskRun {fork.name!r}'s {len(replies)} steps")
    if step and not messages[replies[step - 1]].tool_calls:
        raise ForkError(f"spec.forkOf.step: step {step} is TaskRun {fork.name!r}'s answer, with no tool calls: "
                        f"fork at step {step - 1} to ask for it again")
    start = replies[step - 1] if step else 0
    end = replies[step] if step < len(replies) else len(messages)
    while end > start + 1 and is_marker(messages[end - 1]):
        end -= 1
    if problem := step_problem([c for c in calls if c.step == step], fork):
        raise ForkError(problem)
    kept = [c.model_copy(update={"idempotency_key": rekeyed(c.idempotency_key, source_uid, uid)})
            for c in calls if c.step <= step]
    conversation = list(messages[:end])
    if fork.input is not None:
        question = next(c for c in kept if c.step == step and c.waiting_for is WaitingFor.ANSWER)
        _answer(question, fork.input, now)
        conversation = conversation[:start] + [m for m in conversation[start:] if m.tool_call_id != question.id]
        conversation.append(Message(role="tool", tool_call_id=question.id, content=fork.input))
    markers = sum(map(is_marker, conversation))
    keep_context = context is not None and context.compactions == markers
    return Cut(conversation, kept, step, context if keep_context else None)


def _answer(record: ToolCallRecord, answer: str, now: str) -> None:
    record.state, record.result, record.error, record.end_time = CallState.SUCCEEDED, answer, None, now
    record.response = HumanResponse(answer=answer, by=ANSWERED_BY)
    record.start_time = record.start_time or now


def rekeyed(key: str, source_uid: str, uid: str) -> str:
    """A copied call's key in the fork: the run's uid in front, the step and the LLM's call id kept."""
    return uid + key[len(source_uid):] if key.startswith(f"{source_uid}/") else key


def label_value(name: str) -> str:
    """The source's name as a label value (at most 63 characters: a longer name is shortened with a hash)."""
    return name if len(name) <= 63 else f"{name[:54]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
