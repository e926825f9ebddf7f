"""Agent: an LLM, a system prompt and the tools it may call."""
from __future__ import annotations

from pydantic import Field

from .common import AGE, READY_COLUMNS, KindInfo, LocalObjectReference, Model, PrinterColumn, ReadyStatus


class AgentSpec(Model):
    llm_ref: LocalObjectReference = Field(description="The LLM this agent talks to.")
    system_prompt: str = Field(min_length=1, description="System prompt that starts every conversation.")
    toolset_refs: list[LocalObjectReference] = Field(default_factory=list, description="ToolSets whose tools the agent may call.")


class AgentStatus(ReadyStatus):
    tools: list[str] = Field(default_factory=list, description="Names of all tools the agent offers the LLM.")


KIND = KindInfo(
    kind="Agent", plural="agents", singular="agent", spec=AgentSpec, status=AgentStatus, short_names=("ag",),
    description="An LLM agent: model, system prompt and tools.",
    columns=(PrinterColumn("LLM", ".spec.llmRef.name"), *READY_COLUMNS, AGE),
)
