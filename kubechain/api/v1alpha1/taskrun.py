"""TaskRun: one execution of a Task by one Ray actor, checkpointed into its status after every step."""
from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field

from .common import AGE, Condition, KindInfo, LocalObjectReference, Model, PrinterColumn


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    PAUSED_FOR_USER_INPUT = "PausedForUserInput"
    COMPLETED = "Completed"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED)


class FunctionCall(Model):
    name: str = Field(description="Function (tool) name the model asked for.")
    arguments: str = Field(description="Arguments as the raw JSON string the model produced.")


class ToolCall(Model):
    id: str = Field(description="Tool call id assigned by the model.")
    type: Literal["function"] = Field(default="function", description="Always `function`.")
    function: FunctionCall = Field(description="The requested call.")


class Message(Model):
    """One chat message in OpenAI chat-completions format (field names as OpenAI spells them)."""

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Author of the message.")
    content: str | None = Field(default=None, description="Text of the message.")
    tool_calls: list[ToolCall] | None = Field(default=None, alias="tool_calls", description="Tool calls requested by an assistant message.")
    tool_call_id: str | None = Field(default=None, alias="tool_call_id", description="For role `tool`: the call this message answers.")
    name: str | None = Field(default=None, description="Optional author name.")


class CallState(str, Enum):
    PENDING = "Pending"          # asked for by the LLM, not started
    STARTED = "Started"          # journaled before a side-effecting tool ran; no outcome recorded yet
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"  # started, then the actor died; not idempotent, so not run again

    @property
    def finished(self) -> bool:
        return self in (CallState.SUCCEEDED, CallState.FAILED, CallState.INTERRUPTED)


class ToolCallRecord(Model):
    """One entry of the write-ahead tool journal."""

    id: str = Field(description="Tool call id (as in the context window).")
    step: int = Field(description="Step in which the LLM asked for the call.")
    tool: str = Field(description="Tool name.")
    arguments: str = Field(description="Arguments as the raw JSON string from the LLM.")
    state: CallState = Field(default=CallState.PENDING,
                             description="Pending, Started, Succeeded, Failed or Interrupted (outcome unknown).")
    idempotency_key: str = Field(default="", description="Stable key of this call (TaskRun uid, step, call id), "
                                                         "handed to tools so a service can de-duplicate.")
    attempts: int = Field(default=0, description="How many times the tool was started for this call.")
    result: str | None = Field(default=None, description="The tool's result, when it succeeded.")
    error: str | None = Field(default=None, description="The error reported to the LLM, when it failed.")
    start_time: str | None = Field(default=None, description="When the call started (RFC 3339).")
    end_time: str | None = Field(default=None, description="When the call ended (RFC 3339).")


class PhaseTransition(Model):
    phase: Phase = Field(description="The phase entered.")
    time: str = Field(description="When (RFC 3339).")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field(default="", description="Details.")


class Usage(Model):
    prompt_tokens: int = Field(default=0, description="Prompt tokens summed over all LLM requests.")
    completion_tokens: int = Field(default=0, description="Completion tokens summed over all LLM requests.")
    total_tokens: int = Field(default=0, description="Sum of the two.")

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens,
                     total_tokens=self.total_tokens + other.total_tokens)


class ActorRef(Model):
    name: str = Field(description="Name of the Ray actor (in Ray namespace `namespace`).")
    namespace: str = Field(description="Ray namespace of the actor.")
    id: str = Field(default="", description="Ray actor id, as shown in the Ray dashboard.")
    restarts: int = Field(default=0, description="How many times an actor was (re)started for this run after the first.")


class SealedContext(Model):
    """How much of the conversation lives out of line. Chunk i is in ConfigMaps `<taskrun>-ctx-<i>-<part>`;
    part 0 carries the chunk's description (annotation kubechain.dev/chunk). Constant size, however long the run."""

    chunks: int = Field(default=0, description="Number of sealed chunks.")
    messages: int = Field(default=0, description="Messages sealed (they precede contextWindow).")
    tool_calls: int = Field(default=0, description="Tool call records sealed (they precede toolCallHistory).")
    bytes: int = Field(default=0, description="Size of the sealed JSON.")


class ContextChunk(Model):
    """A sealed, immutable piece of a conversation, stored out of line (ConfigMaps `<name>-<part>`)."""

    name: str = Field(description="ConfigMap name prefix; the parts are `<name>-0`, `<name>-1`, ...")
    parts: int = Field(description="How many ConfigMaps hold the chunk.")
    messages: int = Field(description="Messages in the chunk.")
    tool_calls: int = Field(description="Tool call records in the chunk.")
    bytes: int = Field(description="Size of the chunk's JSON.")
    sha256: str = Field(description="SHA-256 of the chunk's JSON, checked when it is read back.")


class TaskRunSpec(Model):
    task_ref: LocalObjectReference = Field(description="The Task this run executes.")


class TaskRunStatus(Model):
    phase: Phase = Field(default=Phase.PENDING, description="Pending, Running, PausedForUserInput, Completed or Failed.")
    message: str = Field(default="", description="What is happening, or why not.")
    agent: str = Field(default="", description="The agent running this TaskRun (from the Task).")
    step: int = Field(default=0, description="Number of LLM turns taken so far.")
    context_window: list[Message] = Field(
        default_factory=list, description="The latest messages of the conversation (OpenAI chat format); older ones "
                                          "are in contextChunks. `kubechain transcript` prints all of it.")
    tool_call_history: list[ToolCallRecord] = Field(
        default_factory=list, description="The latest tool calls (the write-ahead journal: arguments, state, result "
                                          "or error, timing); older finished ones are in contextChunks.")
    sealed_context: SealedContext = Field(
        default_factory=lambda: SealedContext(), description="Older messages and tool calls, sealed in order into "
                                                             "ConfigMaps owned by the TaskRun: written once, never rewritten.")
    phase_history: list[PhaseTransition] = Field(default_factory=list, description="Timestamped phase transitions with reasons.")
    output: str | None = Field(default=None, description="The agent's final answer, once Completed.")
    error: str | None = Field(default=None, description="Why the run failed, once Failed.")
    usage: Usage = Field(default_factory=Usage, description="Tokens used by the run.")
    actor: ActorRef | None = Field(default=None, description="Where the run executes: its Ray actor.")
    epoch: int = Field(default=0, description="Fencing number, raised each time an actor is started for this run: "
                                              "only the actor holding the current epoch may write checkpoints.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")


KIND = KindInfo(
    kind="TaskRun", plural="taskruns", singular="taskrun", spec=TaskRunSpec, status=TaskRunStatus,
    short_names=("tr",), description="One execution of a Task by a Ray actor.",
    columns=(PrinterColumn("Agent", ".status.agent"), PrinterColumn("Phase", ".status.phase"),
             PrinterColumn("Step", ".status.step", "integer"),
             PrinterColumn("Tokens", ".status.usage.totalTokens", "integer"),
             PrinterColumn("Actor", ".status.actor.name", priority=1), AGE),
)
