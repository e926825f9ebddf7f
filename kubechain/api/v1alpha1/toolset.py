"""ToolSet: a named group of tools: inline, referenced Tool objects, and the tools of MCP servers."""
from __future__ import annotations

from pydantic import Field, model_validator

from .common import AGE, READY_COLUMNS, KindInfo, LocalObjectReference, Model, ReadyStatus
from .mcp import MCPServer, MCPServerStatus
from .tool import TOOL_NAME_PATTERN, ToolSpec


class InlineTool(ToolSpec):
    name: str = Field(pattern=TOOL_NAME_PATTERN, description="Tool name shown to the LLM (letters, digits, _ and -).")


class ToolSetSpec(Model):
    tools: list[InlineTool] = Field(default_factory=list, description="Tools defined inline.")
    tool_refs: list[LocalObjectReference] = Field(default_factory=list, description="Tool objects in this namespace.")
    mcp_servers: list[MCPServer] = Field(default_factory=list, description="MCP servers whose tools this set offers "
                                         "(discovered by the operator into status.mcpServers), named "
                                         "`<server>__<tool>` for the LLM.")

    @model_validator(mode="after")
    def _unique_servers(self) -> "ToolSetSpec":
        names = [s.name for s in self.mcp_servers]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"MCP server names must be unique within a ToolSet: {', '.join(dupes)}")
        return self


class ToolSetStatus(ReadyStatus):
    tools: list[str] = Field(default_factory=list, description="Names of the tools this set offers, as the LLM sees them.")
    mcp_servers: list[MCPServerStatus] = Field(default_factory=list, description="What each MCP server offered when "
                                               "the operator last asked it (refreshed on a timer).")


KIND = KindInfo(
    kind="ToolSet", plural="toolsets", singular="toolset", spec=ToolSetSpec, status=ToolSetStatus,
    short_names=("ts",), description="A group of tools.", columns=(*READY_COLUMNS, AGE),
)
