"""What the operator hands to a TaskRun actor: the small interface between control and data plane.

The operator resolves Task → Agent → LLM/ToolSets/Tools (and the API key from its Secret) once,
so the actor needs no read access to anything but its own TaskRun.
"""
from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field, SecretStr

from .v1alpha1 import LLMSpec, Model, ToolExecution


class ResolvedTool(Model):
    name: str = Field(description="Name shown to the LLM.")
    description: str = Field(description="Description shown to the LLM.")
    parameters: dict[str, Any] = Field(description="JSON Schema of the arguments.")
    execution: ToolExecution = Field(description="How the tool runs.")
    idempotent: bool = Field(default=False, description="Safe to repeat with the same idempotency key.")

    def openai_schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


class TaskRunRef(Model):
    namespace: str
    name: str
    uid: str


class RunSpec(Model):
    taskrun: TaskRunRef
    epoch: int = Field(default=1, description="The fencing epoch this actor holds (see TaskRunStatus.epoch).")
    agent: str
    llm: LLMSpec
    api_key: SecretStr | None = Field(default=None, description="From the LLM's Secret; repr-masked, never serialised to status.")
    system_prompt: str
    user_input: str
    tools: list[ResolvedTool] = Field(default_factory=list)


class TaskRunActorAPI(Protocol):
    """The methods the operator may call on a TaskRun actor (see actors/taskrun_actor.py)."""

    async def run(self) -> str:
        """Run (or join the running) loop until the TaskRun ends; returns the final phase. Idempotent."""
