"""Agent: an LLM, a system prompt and the tools it may call."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import AGE, READY_COLUMNS, KindInfo, LocalObjectReference, Model, PrinterColumn, ReadyStatus


class ContextPolicy(Model):
    """How a run keeps what the model sees within its LLM's context window (LLM.spec.contextWindowTokens). A
    compaction changes only what is sent: the run's journal and sealed chunks keep the whole conversation, and
    `kubechain transcript` shows it all, with a marker where each compaction happened."""

    strategy: Literal["truncate", "summarize", "none"] = Field(
        default="truncate", description="truncate: older tool results and long arguments are replaced by a marker "
        "naming the journal call that keeps them, and the oldest turns are left out if that is not enough. "
        "summarize: the LLM summarises the older part (one more request, counted in usage). none: a conversation "
        "that outgrows the window fails the run with reason ContextLengthExceeded. The system prompt, the user's "
        "input and the latest turn are always sent as they are.")
    threshold_percent: int = Field(default=80, ge=10, le=95, description="Compact when the next request is "
                                   "estimated to pass this share of the window (the provider's reported usage plus "
                                   "an estimate of what was added since); a compaction aims at half of it.")


class AgentSpec(Model):
    llm_ref: LocalObjectReference = Field(description="The LLM this agent talks to.")
    system_prompt: str = Field(min_length=1, description="System prompt that starts every conversation.")
    toolset_refs: list[LocalObjectReference] = Field(default_factory=list, description="ToolSets whose tools the agent may call.")
    context: ContextPolicy = Field(default_factory=lambda: ContextPolicy(), description="How long conversations "
                                   "are kept within the model's context window.")


class AgentStatus(ReadyStatus):
    tools: list[str] = Field(default_factory=list, description="Names of all tools the agent offers the LLM.")


KIND = KindInfo(
    kind="Agent", plural="agents", singular="agent", spec=AgentSpec, status=AgentStatus, short_names=("ag",),
    description="An LLM agent: model, system prompt and tools.",
    columns=(PrinterColumn("LLM", ".spec.llmRef.name"), *READY_COLUMNS, AGE),
)
