"""The agent loop: ask the LLM, run the tools it asks for, checkpoint, repeat until a final answer.

Pure with respect to I/O: the LLM, the tools and the checkpoint store come in as interfaces.
"""
from __future__ import annotations

from typing import Any

from kubechain.api.runspec import RunSpec
from kubechain.api.v1alpha1 import Message, Phase, TaskRunStatus, ToolCallRecord
from kubechain.api.v1alpha1.common import now_rfc3339
from kubechain.taskrun_lifecycle import enter

from .checkpoint import CheckpointStore
from .llm import LLMClient, LLMError
from .tools.executor import ToolExecutor


def _wire(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json", by_alias=True, exclude_none=True)


class AgentLoop:
    def __init__(self, spec: RunSpec, llm: LLMClient, tools: ToolExecutor, store: CheckpointStore):
        self.spec, self.llm, self.tools, self.store = spec, llm, tools, store
        self._tool_schemas = [t.openai_schema() for t in spec.tools]  # once, not per step
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
        for call in reply.message.tool_calls:
            record = ToolCallRecord(id=call.id, step=status.step, tool=call.function.name,
                                    arguments=call.function.arguments, start_time=now_rfc3339())
            outcome = await self.tools.execute(call.function.name, call.function.arguments, call.id)
            record.result, record.error, record.end_time = outcome.result, outcome.error, now_rfc3339()
            status.tool_call_history.append(record)
            self._append(status, Message(role="tool", tool_call_id=call.id, content=outcome.content))
        await self.store.save(status)
        return status

    def _append(self, status: TaskRunStatus, message: Message) -> None:
        status.context_window.append(message)
        self._messages.append(_wire(message))

    async def _finish(self, status: TaskRunStatus, phase: Phase, reason: str, message: str) -> TaskRunStatus:
        status = enter(status, phase, reason, message)
        await self.store.save(status)
        await self.store.event(reason, f"{phase.value}: {message}", warning=phase is Phase.FAILED)
        return status
