"""The agent loop: ask the LLM, run the tools it asks for, checkpoint, repeat until a final answer.

Durability rules (the write-ahead tool journal is `status.toolCallHistory`):
- A step that runs side-effecting calls makes two writes: the write-ahead record (the reply and its calls
  journaled Started, in one write, before any of them runs: a restored run never sends that step to the LLM
  again), then the results of all its calls in one write once they have ended, before the next LLM request.
  A step that runs no call with effects (only builtins, or calls that wait or fail before they start) is
  checkpointed once, with its results: a crash in between only costs a repeated LLM request.
- A restored run re-runs a Started call only if the tool is idempotent (with the same idempotency key);
  otherwise the LLM is told it was interrupted with an unknown outcome. Nothing runs twice silently. That holds
  too for a call of a step whose other calls were still running at the crash: its result was not written yet.
- A conversation that outgrows the model's window is compacted (actors/compaction.py) in a step of its own,
  checkpointed like any other: only what the model is sent changes; the conversation keeps everything.
- Calls that wait (ask_human, a tool that requires approval, a delegate call) are journaled as
  Waiting; once the step's other calls are done the run enters PausedForUserInput or Delegating and
  the actor ends. The operator resumes the run with what the calls waited for (RunSpec.inputs).
- A step's request streams into `live` (actors/livestream.py) while it runs, for readers only: what a step
  checkpoints, and how often, does not depend on it.
Pure with respect to I/O: the LLM, the tools and the checkpoint store come in as interfaces.
"""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from kubechain.api.runspec import ResolvedTool, RunSpec
from kubechain.api.v1alpha1 import CallState, Message, Phase, Reason, TaskRunStatus, ToolCallRecord, WaitingFor
from kubechain.api.v1alpha1.common import now_rfc3339
from kubechain.core.naming import child_taskrun_name, tool_job_name
from kubechain.core.lifecycle import enter

from . import compaction, limits, replies, spend
from .checkpoint import CheckpointStore
from .livestream import LiveStream, NoStream
from .llm import LLMClient, LLMError, LLMReply
from .retries import HOLD_SECONDS, gave_up, next_retry, wait_left
from .telemetry import RunTelemetry
from .tools.arguments import parse_arguments
from .tools.executor import ToolExecutor, ToolOutcome
from .tools.offload import argument_errors

INTERRUPTED = ("interrupted by a crash while running; outcome unknown. It was not run again because the tool "
               "is not idempotent.")


TRUNCATED = ("the model's answer was cut off at its token limit (finish_reason: length); raise the LLM's "
             "maxCompletionTokens or maxTokens")
TRUNCATED_CALL = ("your output was cut off at the token limit before this call's arguments were complete "
                  "(finish_reason: length); call it again with shorter arguments")
SHOWN_CHARS = 16 * 1024   # of a tool's result, in the tool message the LLM reads
KEPT_CHARS = 1024 * 1024  # of a tool's result, in the journal (a checkpoint chunk holds ~900 KB per ConfigMap part)


def _capped(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}\n[truncated: {len(text)} characters in all]"


def _wire(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json", by_alias=True, exclude_none=True)


def idempotency_key(uid: str, step: int, call_id: str) -> str:
    return f"{uid}/{step}/{call_id}"


class AgentLoop:
    def __init__(self, spec: RunSpec, llm: LLMClient, tools: ToolExecutor, store: CheckpointStore,
                 telemetry: RunTelemetry | None = None, live: LiveStream | None = None):
        self.spec, self.llm, self.tools, self.store = spec, llm, tools, store
        self.live = live or NoStream()
        self._head: list[dict[str, Any]] = []  # the conversation's first messages while no checkpoint holds them
        self.telemetry = telemetry or RunTelemetry()
        self._tool_schemas = [t.openai_schema() for t in spec.tools]  # once, not per step
        self._by_name: dict[str, ResolvedTool] = {t.name: t for t in spec.tools}
        self._history: list[dict[str, Any]] = []  # the whole conversation in wire form, appended in step with status
        self._messages: list[dict[str, Any]] = []  # what the model is sent of it (compaction.view)
        self._known = (0, 0)  # (messages of the view, tokens) as the provider counted them at the last reply
        self._overhead = len(json.dumps(self._tool_schemas)) // 4  # the tools' schemas, in every request
        self._window = spec.llm.context_window_tokens  # or as a provider's context_length_exceeded states it

    async def run(self, status: TaskRunStatus) -> TaskRunStatus:
        if not status.context_window:
            status = status.model_copy(update={"context_window": [
                Message(role="system", content=self.spec.system_prompt),
                Message(role="user", content=self.spec.user_input)]})
            self._head = [_wire(m) for m in status.context_window]  # not checkpointed until the first step is
        self._history = [_wire(m) for m in status.context_window]
        self._messages = compaction.view(self._history, status.context)
        while status.phase is Phase.RUNNING:
            wait = wait_left(status.llm_retry, datetime.now(timezone.utc))
            if wait > HOLD_SECONDS:
                return status  # still Running: the operator starts a fresh actor at retryAt, no process waits
            if wait:
                await asyncio.sleep(wait)
            with self.telemetry.step(status.step + 1):
                status = await self.step(status)
        return status

    async def step(self, status: TaskRunStatus) -> TaskRunStatus:
        open_calls = [r for r in status.tool_call_history if not r.state.finished]
        if not open_calls:  # otherwise a restored run finishes the journaled step first
            if status.step >= self.spec.max_turns:
                message = f"the agent did not answer within maxTurns={self.spec.max_turns} LLM requests"
                return await self._finish(status.model_copy(update={"error": message}), Phase.FAILED,
                                          Reason.MAX_TURNS_EXCEEDED, message)
            estimate = self._estimate()  # of the next request's prompt
            if (spent := spend.over_budget(status, self.spec.budget, estimate, self.spec.llm.pricing)):
                return await self._finish(status.model_copy(update={"error": spent}), Phase.FAILED,
                                          Reason.BUDGET_EXCEEDED, spent)
            if compaction.over(estimate, self._window, self.spec.context):
                if (compacted := await self._compact(status, self._window or 0)) is not None:
                    return compacted  # a step of its own: the next one asks the LLM with the compacted view
            self.live.begin(status.step + 1, self._head)
            try:
                reply = await self._ask(status, self._messages, self._tool_schemas)
            except LLMError as exc:
                self.live.end(failed=True)
                return await self._llm_failed(status, exc)
            self.live.end()
            if (problem := replies.refused(reply.message)) is not None:
                return await self._llm_failed(status, LLMError(problem))  # final: reason LLMError, the reply not kept
            status.step += 1
            self._append(status, reply.message)
            if reply.usage.prompt_tokens:
                self._known = (len(self._messages), reply.usage.prompt_tokens + reply.usage.completion_tokens)
            cut = reply.finish_reason == "length"
            if not reply.message.tool_calls:
                if cut:  # a partial answer is not the agent's answer
                    return await self._finish(status.model_copy(update={"error": TRUNCATED}), Phase.FAILED,
                                              Reason.OUTPUT_TRUNCATED, TRUNCATED)
                status.output = reply.message.content or ""
                return await self._finish(status, Phase.COMPLETED, Reason.FINAL_ANSWER, "the agent answered")
            open_calls = [ToolCallRecord(id=c.id, step=status.step, tool=c.function.name, arguments=c.function.arguments,
                                         idempotency_key=idempotency_key(self.spec.taskrun.uid, status.step, c.id))
                          for c in reply.message.tool_calls]
            status.tool_call_history.extend(open_calls)
            for record in open_calls if cut else ():  # the last call's arguments may stop mid-way
                if parse_arguments(record.arguments)[1] is not None:
                    self._record(status, record, CallState.FAILED, ToolOutcome(error=TRUNCATED_CALL))
            for record, why in limits.refusals(open_calls, self._by_name, self.spec.caps):  # the operator's limits
                self._record(status, record, CallState.FAILED, ToolOutcome(error=why))
        await self._run_calls(status, open_calls)  # the reply is written with its calls Started, or with the results
        if waiting := [r for r in open_calls if r.state is CallState.WAITING]:
            human = [r for r in waiting if r.waiting_for.human]
            phase = Phase.PAUSED_FOR_USER_INPUT if human else Phase.DELEGATING
            others = ", ".join(r.child_run or r.job or "" for r in waiting)
            what = (f"{len(human)} call(s) wait for a human: see spec.responses" if human
                    else f"waiting for {others}")
            return await self._finish(status, phase, Reason.WAITING_FOR_INPUT if human else Reason.DELEGATED, what)
        await self._save(status)
        return status

    async def _run_calls(self, status: TaskRunStatus, records: list[ToolCallRecord]) -> None:
        """Settle what needs no tool (inputs, waits, bad arguments, interruptions), journal the rest Started in
        one write if any has effects (with the step's reply, when it is a new one), run them concurrently (at most
        maxParallelToolCalls at a time) and record them in call order. Only this coroutine touches `status`; the
        step's one write after the calls makes their results durable before the next LLM request."""
        errors = await argument_errors(records, self._by_name, self.spec.local_tool_timeout_seconds)  # off the loop
        ready = [r for r, error in zip(records, errors) if self._prepare(status, r, error)]
        if not ready:
            return
        for record in ready:
            record.state, record.attempts, record.start_time = CallState.STARTED, record.attempts + 1, now_rfc3339()
        if any(self._has_effects(r) for r in ready):
            await self._save(status)  # write-ahead: the journal says Started before the effects happen
        limit = asyncio.Semaphore(self.spec.max_parallel_tool_calls)

        async def run(record: ToolCallRecord) -> tuple[ToolCallRecord, ToolOutcome]:
            async with limit:
                with self.telemetry.tool_call(record.tool, record.id) as span:
                    outcome = await self.tools.execute(record.tool, record.arguments, record.id,
                                                       record.idempotency_key)
                    span["outcome"] = "succeeded" if outcome.error is None else "failed"
            return record, outcome

        # In call order once all ended, not as each ends: the one results write makes them durable together anyway,
        # and the LLM (and a fork, and a test) then reads the tool messages in the order it asked for the calls.
        for record, outcome in await asyncio.gather(*(run(r) for r in ready)):
            self._record(status, record, CallState.SUCCEEDED if outcome.error is None else CallState.FAILED, outcome)

    def _has_effects(self, record: ToolCallRecord) -> bool:
        tool = self._by_name.get(record.tool)
        return tool is not None and not tool.execution.pure

    def _prepare(self, status: TaskRunStatus, record: ToolCallRecord, argument_error: str | None) -> bool:
        """Whether the call must run now. Otherwise it got its result here (an input it waited for, a
        rejection, bad arguments, an interruption) or it waits."""
        tool = self._by_name.get(record.tool)
        if record.state.finished:
            return False  # settled in the step already (arguments cut off at the token limit)
        if record.state is CallState.WAITING:
            given = self.spec.inputs.get(record.key)
            if given is None:
                return False  # still waiting: the operator resumed the run for another call's input
            record.response = given.response
            if record.waiting_for is WaitingFor.CHILD_RUN:
                spend.child_spent(status, record, given.usage, given.cost, given.currency)
            if record.waiting_for is not WaitingFor.APPROVAL:
                self._record(status, record, CallState.SUCCEEDED if given.accepted else CallState.FAILED,
                             ToolOutcome(result=given.text) if given.accepted else ToolOutcome(error=given.text))
                return False
            if not given.accepted:
                reason = f": {given.text}" if given.text else ""
                self._record(status, record, CallState.FAILED, ToolOutcome(error=f"rejected by a human{reason}"))
                return False
            record.state = CallState.PENDING  # approved: runs like any call (a container call as its Job)
            return not (tool is not None and tool.execution.container is not None and self._job(record))
        if record.state is CallState.PENDING and tool is not None:
            if argument_error is not None:
                self._record(status, record, CallState.FAILED, ToolOutcome(error=argument_error))
                return False
            if self._waits(status, record, tool):
                return False
        if record.state is CallState.STARTED and tool is not None and not (tool.idempotent or tool.execution.pure):
            self._record(status, record, CallState.INTERRUPTED, ToolOutcome(error=INTERRUPTED))
            return False
        return True

    def _job(self, record: ToolCallRecord) -> bool:
        """A container call waits for its Job, which the operator runs (named from the idempotency key)."""
        self._wait(record, WaitingFor.JOB, job=tool_job_name(self.spec.taskrun.name, record.idempotency_key),
                   attempts=record.attempts + 1)  # the operator starts its Job once: a resumed run finds it
        return True

    def _waits(self, status: TaskRunStatus, record: ToolCallRecord, tool: ResolvedTool) -> bool:
        """Whether a new call must wait for a human or a child run (then it is journaled Waiting), or fails
        before it starts (bad arguments, a delegation too deep or in a cycle)."""
        if tool.requires_approval:
            expires = None
            if tool.approval_timeout_seconds:
                deadline = datetime.now(timezone.utc) + timedelta(seconds=tool.approval_timeout_seconds)
                expires = deadline.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self._wait(record, WaitingFor.APPROVAL, question=f"run {record.tool}({record.arguments})?",
                       expires_at=expires)
            return True
        if tool.execution.container is not None:
            return self._job(record)
        ask = tool.execution.builtin is not None and tool.execution.builtin.name == "ask_human"
        if not ask and tool.execution.delegate is None:
            return False
        args, error = parse_arguments(record.arguments)
        key = "question" if ask else "message"
        if error is None and not (isinstance(args.get(key), str) and args[key].strip()):
            error = f"argument {key!r} (a non-empty string) is required"
        if error is None and not ask:
            error = self._delegation_problem(tool.execution.delegate.agent_ref.name)
        if error is not None:
            self._record(status, record, CallState.FAILED, ToolOutcome(error=error))
        elif ask:
            self._wait(record, WaitingFor.ANSWER, question=args[key])
        else:
            child = child_taskrun_name(self.spec.taskrun.name, record.idempotency_key)
            self._wait(record, WaitingFor.CHILD_RUN, child_run=child, delegated_to=tool.execution.delegate.agent_ref.name)
        return True

    def _delegation_problem(self, agent: str) -> str | None:
        chain = [*self.spec.lineage, self.spec.agent]
        if agent in chain:
            return f"delegation cycle refused: {' -> '.join([*chain, agent])}"
        if len(chain) >= self.spec.max_delegation_depth:
            return (f"delegation depth limit ({self.spec.max_delegation_depth}) reached: "
                    f"{' -> '.join([*chain, agent])}")
        return None

    @staticmethod
    def _wait(record: ToolCallRecord, waiting_for: WaitingFor, **fields: Any) -> None:
        record.state, record.waiting_for, record.start_time = CallState.WAITING, waiting_for, now_rfc3339()
        for name, value in fields.items():
            setattr(record, name, value)

    def _record(self, status: TaskRunStatus, record: ToolCallRecord, state: CallState, outcome: ToolOutcome) -> None:
        if (kept := limits.kept(outcome, status, self.spec.caps.journal_bytes)) is not outcome:
            state, outcome = CallState.FAILED, kept
        record.state, record.end_time = state, now_rfc3339()
        record.result, record.error = _capped(outcome.result, KEPT_CHARS), _capped(outcome.error, KEPT_CHARS)
        self.telemetry.metrics.tool_call(record.tool, state.value)
        content = outcome.content
        if len(content) > SHOWN_CHARS:  # the journal keeps the whole result (sealed out of line with the context)
            content = (f"{content[:SHOWN_CHARS]}\n[truncated: showing {SHOWN_CHARS} of {len(content)} characters; "
                       f"the full result is kept in the run's journal, call {record.id}]")
        self._append(status, Message(role="tool", tool_call_id=record.id, content=content))

    def _append(self, status: TaskRunStatus, message: Message) -> None:
        status.context_window.append(message)
        self._history.append(wire := _wire(message))
        if not compaction.is_marker(wire):
            self._messages.append(wire)

    async def _ask(self, status: TaskRunStatus, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LLMReply:
        """One LLM request, counted in usage; an answer ends the episode of failed requests, if one was going on."""
        async with self.telemetry.llm_call(self.spec.llm.model, self.spec.llm.pricing) as call:
            reply = await self.llm.complete(messages, tools)
            call.update(usage=reply.usage, ok=True)
        spend.charge(status, reply.usage, self.spec.llm.pricing)
        if status.llm_retry is not None:
            status.message = f"the LLM answered again after {status.llm_retry.attempts} failed attempt(s)"
            status.llm_retry = None
        return reply

    def _estimate(self) -> int:
        """Tokens of the next request: the provider's count at the last reply, plus an estimate of what came since."""
        counted, known = self._known
        if not counted:
            return sum(map(compaction.tokens, self._messages)) + self._overhead
        return known + sum(map(compaction.tokens, self._messages[counted:]))

    async def _compact(self, status: TaskRunStatus, window: int) -> TaskRunStatus | None:
        """A compaction step (checkpointed, with an Event), or None when nothing more can be compacted."""
        plan = compaction.plan(self._history, status.context, window, self.spec.context, self._overhead)
        if plan is None:
            return None
        state, strategy = plan.state, self.spec.context.strategy
        if plan.to_summarize is not None:
            previous = status.context.summary if status.context else None
            request = compaction.summary_request(self._history, plan.to_summarize, previous, window // 2)
            try:
                reply = await self._ask(status, request, [])
            except LLMError as exc:
                if exc.reason is not Reason.CONTEXT_LENGTH_EXCEEDED:
                    return await self._llm_failed(status, exc)
                reply = None  # the summary request itself is too long: truncate this time
            if reply is None or not reply.message.content:
                strategy = "truncate"
                plan = compaction.plan(self._history, status.context, window, self.spec.context.model_copy(
                    update={"strategy": "truncate"}), self._overhead)
                if plan is None:
                    return None
                state = plan.state
            else:
                state = state.model_copy(update={"summary": reply.message.content[:compaction.SUMMARY_CHARS]})
        after = sum(map(compaction.tokens, compaction.view(self._history, state))) + self._overhead
        status.context = state.model_copy(update={"tokens": after})
        text = compaction.describe(plan, strategy, after)
        self._append(status, Message(role="system", name=compaction.MARKER, content=text))
        self._messages, self._known, status.message = compaction.view(self._history, status.context), (0, 0), text
        await self._save(status)
        await self.store.event(Reason.CONTEXT_COMPACTED, text)
        return status

    async def _too_long(self, status: TaskRunStatus, error: LLMError) -> TaskRunStatus:
        """The provider refused a request longer than its window: compact (tighter each time, since the estimate
        fell short), or fail when nothing more can be compacted or the Agent said not to."""
        if self.spec.context.strategy != "none":
            estimate = self._estimate()
            self._window = min(self._window or estimate, compaction.window_in(str(error)) or estimate)
            if (compacted := await self._compact(status, int(min(self._window, estimate) * 0.75))) is not None:
                return compacted
        why = ("Agent.spec.context.strategy is none" if self.spec.context.strategy == "none"
               else "nothing more could be compacted")
        message = f"the conversation no longer fits the model's context window ({why}): {str(error)[:500]}"
        return await self._finish(status.model_copy(update={"error": message}), Phase.FAILED,
                                  Reason.CONTEXT_LENGTH_EXCEEDED, message)

    async def _save(self, status: TaskRunStatus) -> None:
        async with self.telemetry.checkpoint():
            await self.store.save(status)
        self._head = []

    async def _llm_failed(self, status: TaskRunStatus, error: LLMError) -> TaskRunStatus:
        """A failed LLM request: the next attempt of the episode is checkpointed (when, and why), or the run fails
        (a final error, or the policy ran out)."""
        if error.reason is Reason.CONTEXT_LENGTH_EXCEEDED:
            return await self._too_long(status, error)
        now = datetime.now(timezone.utc)
        retry = next_retry(self.spec.llm.retry, status.llm_retry, error, now)
        if retry is None:
            message = gave_up(status.llm_retry, error, now)
            reason = Reason.LLM_ERROR if error.retryable else error.reason
            return await self._finish(status.model_copy(update={"error": message, "llm_retry": None}), Phase.FAILED,
                                      reason, message)
        status.llm_retry = retry
        status.message = (f"LLM request failed ({retry.reason}, attempt {retry.attempts}): {str(error)[:300]}; "
                          f"retrying at {retry.retry_at}")
        if wait_left(retry, now) > HOLD_SECONDS:
            status.actor = None  # it lets go of the run until then: no actor holds it, as while a run waits
        await self._save(status)
        return status

    async def _finish(self, status: TaskRunStatus, phase: Phase, reason: Reason, message: str) -> TaskRunStatus:
        status = enter(status, phase, reason, message, now=datetime.now(timezone.utc))
        await self._save(status)
        await self.store.event(reason, f"{phase.value}: {message}", warning=phase is Phase.FAILED)
        return status
