"""MCP servers of a ToolSet: how to reach one (spec) and what it offered when last asked (status).

A ToolSet entry, not a kind of its own: an MCP server is a *source of tools*, which is what a ToolSet
is, and Agents already reference ToolSets (readiness, resolution and duplicate checks follow for free).
Its tools are discovered by the operator and shown to the LLM as `<server>__<tool>`.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field, model_validator

from .common import Model, the_one_set
from .tool import EnvVar, HTTPHeader

MCP_SERVER_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
MCP_TRANSPORTS = ("stdio", "http")


class MCPStdio(Model):
    """A local process speaking MCP on stdin/stdout: code run for the tenant, so refused unless the cluster admin
    allows it in the namespace (label kubechain.dev/code-tools=allowed or KUBECHAIN_CODE_TOOLS_NAMESPACES) and
    lists the command (KUBECHAIN_MCP_STDIO_COMMANDS). It runs on the Ray workers only: discovery as a Ray task,
    calls in each TaskRun actor's process, so the command must exist in the Ray image."""

    command: str = Field(min_length=1, description="Executable to start, e.g. `mcp-server-time`; one the operator's "
                         "KUBECHAIN_MCP_STDIO_COMMANDS lists.")
    args: list[str] = Field(default_factory=list, description="Arguments of the command.")
    env: list[EnvVar] = Field(default_factory=list, description="Environment variables (values or Secret keys), "
                              "added to a minimal inherited environment (PATH, HOME...): only names the operator's "
                              "KUBECHAIN_CODE_TOOLS_ENV allows, never loader or interpreter variables (LD_*, "
                              "PYTHON*, NODE_OPTIONS, BROWSER...).")


class MCPHTTP(Model):
    """A remote MCP server over streamable HTTP."""

    url: str = Field(pattern=r"^https?://", description="The server's MCP endpoint, e.g. http://host:3001/mcp.")
    headers: list[HTTPHeader] = Field(default_factory=list, description="Request headers (values or Secret keys), "
                                      "e.g. Authorization.")


class MCPServer(Model):
    """Exactly one of `stdio`, `http`."""

    name: str = Field(pattern=MCP_SERVER_NAME_PATTERN, description="Short name (lower-case letters, digits and -, "
                      "at most 32), unique in the ToolSet: the prefix of its tools' names as the LLM sees them "
                      "(`<name>__<tool>`).")
    stdio: MCPStdio | None = Field(default=None, description="Start the server as a local process.")
    http: MCPHTTP | None = Field(default=None, description="Connect to the server over streamable HTTP.")
    timeout_seconds: float = Field(default=60, gt=0, description="Limit for connecting, listing tools and each "
                                   "tool call: then the call is a tool error (and discovery a failure).")
    refresh_seconds: int = Field(default=300, ge=10, description="How often the operator lists the server's tools "
                                 "again (a failed server is retried sooner).")

    @model_validator(mode="after")
    def _exactly_one(self) -> "MCPServer":
        the_one_set(self, MCP_TRANSPORTS, f"MCP server {self.name!r}")
        return self

    @property
    def transport(self) -> str:
        return "stdio" if self.stdio is not None else "http"

    def config_hash(self) -> str:
        """Identifies how to reach the server (not its refresh period): discovery results are for one hash."""
        wire = self.to_wire(include={"stdio", "http"})
        return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()[:16]

    def secret_refs(self) -> set[tuple[str, str]]:
        """(Secret, key) pairs of its env or headers: read for whoever connects (operator or actor)."""
        values = self.stdio.env if self.stdio is not None else self.http.headers
        return {(v.value_from.secret_key_ref.name, v.value_from.secret_key_ref.key)
                for v in values if v.value_from is not None}


MCPServer.model_config["json_schema_extra"] = {"oneOf": [{"required": [k]} for k in MCP_TRANSPORTS]}


class MCPToolAnnotations(Model):
    """The server's hints about a tool (untrusted, as MCP says). A tool is treated as idempotent - safe to run
    again after a crash - when it is read-only or idempotent; otherwise as side-effecting."""

    read_only_hint: bool | None = Field(default=None, description="The tool does not change its environment.")
    idempotent_hint: bool | None = Field(default=None, description="Repeating a call with the same arguments has "
                                         "no further effect.")
    destructive_hint: bool | None = Field(default=None, description="The tool may destroy or overwrite data.")
    open_world_hint: bool | None = Field(default=None, description="The tool reaches outside entities (the web...).")


class MCPToolInfo(Model):
    name: str = Field(description="The tool's name on the server.")
    llm_name: str = Field(description="Its name as the LLM sees it: `<server>__<tool>`, sanitised to "
                          "[a-zA-Z0-9_-]{1,64} (a hash suffix when it had to change).")
    description: str = Field(default="", description="The server's description of the tool.")
    input_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of the tool's arguments.")
    annotations: MCPToolAnnotations = Field(default_factory=MCPToolAnnotations, description="The server's hints.")

    @property
    def idempotent(self) -> bool:
        return bool(self.annotations.read_only_hint or self.annotations.idempotent_hint)


def compact(value: Any) -> Any:
    """`value` without null or "" anywhere (the local apiserver refuses "", and null is no removal in a list)."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


class MCPServerStatus(Model):
    name: str = Field(description="The server's name in spec.mcpServers.")
    ready: bool = Field(default=False, description="The last discovery listed its tools.")
    message: str = Field(default="", description="The tool count, or why the server could not be used.")
    config_hash: str = Field(default="", description="Hash of the server's spec this discovery used: a changed "
                             "spec is discovered again before the ToolSet is ready.")
    server_info: str = Field(default="", description="Name and version the server reported.")
    last_discovery_time: str = Field(default="", description="When the operator last asked the server (RFC 3339).")
    tools: list[MCPToolInfo] = Field(default_factory=list, description="The tools the server offers.")

    def to_entry(self) -> dict[str, Any]:
        """The status.mcpServers entry as written (see compact)."""
        return compact(self.model_dump(mode="json", by_alias=True, exclude_none=True))
