"""The agent loop: ask the LLM, run the tools it asks for, checkpoint, repeat until a final answer.

Durability rules (the write-ahead tool journal is `status.toolCallHistory`):
- A reply with side-effecting tool calls is checkpointed before any of them runs, so a restored run
  never sends that step to the LLM again. Replies that only call builtins (pure) are checkpointed
  together with their results: a crash in between only costs a repeated LLM request.
- A side-effecting call is journaled as Started before it runs. A restored run re-runs a Started
  call only if the tool is idempotent (with the same idempotency key); otherwise the LLM is told it
  was interrupted with an unknown outcome. Nothing runs twice silently.
Pure with respect to I/O: the LLM, the tools and the checkpoint store come in as interfaces.
"""
from __future__ import annotations

from typing import Any

from kubechain.api.runspec import ResolvedTool, RunSpec
from kubechain.api.v1alpha1 import CallState, Message, Phase, TaskRunStatus, ToolCallRecord
from kubechain.api.v1alpha1.common import now_rfc3339
from kubechain.taskrun_lifecycle import enter

from .checkpoint import CheckpointStore
from .llm import LLMClient, LLMError
from .tools.executor import ToolExecutor, ToolOutcome

INTERRUPTED = ("interrupted by a crash while running; outcome unknown. It was not run again because the tool "
               "is not idempotent.")


def _wire(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json", by_alias=True, exclude_none=True)


def idempotency_key(uid: str, step: int, call_id: str) -> str:
    return f"{uid}/{step}/{call_id}"


class AgentLoop:
    def __init__(self, spec: RunSpec, llm: LLMClient, tools: ToolExecutor, store: CheckpointStore):
        self.spec, self.llm, self.tools, self.store = spec, llm, tools, store
        self._tool_schemas = [t.openai_schema() for t in spec.tools]  # once, not per step
        self._by_name: dict[str, ResolvedTool] = {t.name: t for t in spec.tools}
        self._messages: list[dict[str, Any]] = []  # the context in wire form, appended in step with status

    async def run(self, status: TaskRunStatus) -> TaskRunStatus:
        if not status.context_window:
            status = status.model_copy(update={"context_window": [
                Message(role="system", content=self.spec.system_prompt),
                Message(role="user", content=self.spec.user_input)]})
        self._messages = [_wire(m) for m in status.context_window]
        while status.phase is Phase.RUNNING:
            status = await self.step(status)
        return status

    async def step(self, status: TaskRunStatus) -> TaskRunStatus:
        open_calls = [r for r in status.tool_call_history if not r.state.finished]
        if not open_calls:  # otherwise a restored run finishes the journaled step first
            try:
                reply = await self.llm.complete(self._messages, self._tool_schemas)
            except LLMError as exc:
                return await self._finish(status.model_copy(update={"error": str(exc)}), Phase.FAILED, "LLMError", str(exc))
            status.step += 1
            status.usage = status.usage + reply.usage
            self._append(status, reply.message)
            if not reply.message.tool_calls:
                status.output = reply.message.content or ""
                return await self._finish(status, Phase.COMPLETED, "FinalAnswer", "the agent answered")
            open_calls = [ToolCallRecord(id=c.id, step=status.step, tool=c.function.name, arguments=c.function.arguments,
                                         idempotency_key=idempotency_key(self.spec.taskrun.uid, status.step, c.id))
                          for c in reply.message.tool_calls]
            status.tool_call_history.extend(open_calls)
            if any(self._has_effects(r) for r in open_calls):
                await self.store.save(status)
        for record in open_calls:
            await self._call(status, record)
        await self.store.save(status)
        return status

    def _has_effects(self, record: ToolCallRecord) -> bool:
        tool = self._by_name.get(record.tool)
        return tool is not None and not tool.execution.pure

    async def _call(self, status: TaskRunStatus, record: ToolCallRecord) -> None:
        tool = self._by_name.get(record.tool)
        if record.state is CallState.STARTED and tool is not None and not (tool.idempotent or tool.execution.pure):
            return self._record(status, record, CallState.INTERRUPTED, ToolOutcome(error=INTERRUPTED))
        record.state, record.attempts, record.start_time = CallState.STARTED, record.attempts + 1, now_rfc3339()
        if self._has_effects(record):
            await self.store.save(status)  # write-ahead: the journal says Started before the effect happens
        outcome = await self.tools.execute(record.tool, record.arguments, record.id, record.idempotency_key)
        self._record(status, record, CallState.SUCCEEDED if outcome.error is None else CallState.FAILED, outcome)

    def _record(self, status: TaskRunStatus, record: ToolCallRecord, state: CallState, outcome: ToolOutcome) -> None:
        record.state, record.result, record.error, record.end_time = state, outcome.result, outcome.error, now_rfc3339()
        self._append(status, Message(role="tool", tool_call_id=record.id, content=outcome.content))

    def _append(self, status: TaskRunStatus, message: Message) -> None:
        status.context_window.append(message)
        self._messages.append(_wire(message))

    async def _finish(self, status: TaskRunStatus, phase: Phase, reason: str, message: str) -> TaskRunStatus:
        status = enter(status, phase, reason, message)
        await self.store.save(status)
        await self.store.event(reason, f"{phase.value}: {message}", warning=phase is Phase.FAILED)
        return status
