"""ToolSet: a named group of tools, inline and/or referenced Tool objects."""
from __future__ import annotations

from pydantic import Field

from .common import AGE, READY_COLUMNS, KindInfo, LocalObjectReference, Model, ReadyStatus
from .tool import TOOL_NAME_PATTERN, ToolSpec


class InlineTool(ToolSpec):
    name: str = Field(pattern=TOOL_NAME_PATTERN, description="Tool name shown to the LLM (letters, digits, _ and -).")


class ToolSetSpec(Model):
    tools: list[InlineTool] = Field(default_factory=list, description="Tools defined inline.")
    tool_refs: list[LocalObjectReference] = Field(default_factory=list, description="Tool objects in this namespace.")


class ToolSetStatus(ReadyStatus):
    tools: list[str] = Field(default_factory=list, description="Names of the tools this set offers, as the LLM sees them.")


KIND = KindInfo(
    kind="ToolSet", plural="toolsets", singular="toolset", spec=ToolSetSpec, status=ToolSetStatus,
    short_names=("ts",), description="A group of tools.", columns=(*READY_COLUMNS, AGE),
)
