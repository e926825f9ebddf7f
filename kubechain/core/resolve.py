"""Readiness and resolution of the kinds that reference each other, as pure functions of a Catalog.

The Catalog is the operator's in-memory view of LLMs, Tools, ToolSets, Agents and Tasks (kopf
indexes in production, a dict in tests), so none of this does I/O.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from pydantic import ValidationError

from kubechain.api.builtins import BUILTIN_ARGUMENTS, DELEGATE_ARGUMENTS
from kubechain.api.runspec import (CallInput, ResolvedExecution, ResolvedMCP, ResolvedTool, RunCaps, RunSpec,
                                   TaskRunRef)
from kubechain.api.v1alpha1 import AgentSpec, LLMSpec, ReadinessReason, MCPServer, MCPServerStatus, ToolSetSpec, ToolSpec
from kubechain.api.v1alpha1.mcp import compact
from kubechain.core.naming import llm_tool_name
from kubechain.core.patterns import pattern_problem

EMPTY_ARGUMENTS = {"type": "object", "properties": {}}


class Catalog(Protocol):
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """{"spec": ..., "status": ...} of an object, or None when it does not exist."""

    def names(self, kind: str, namespace: str) -> Iterable[str]: ...


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: ReadinessReason
    message: str
    tools: list[str] = field(default_factory=list)


def not_ready(reason: ReadinessReason, message: str) -> Readiness:
    return Readiness(False, reason, message)


def tool_problem(spec: ToolSpec) -> str | None:
    """Why a tool definition cannot be offered to an LLM, or None."""
    if spec.arguments is None:
        return None
    if spec.arguments.get("type") != "object":
        return "arguments must be a JSON Schema of type object"
    import jsonschema  # only needed when a schema is given

    try:
        jsonschema.validators.validator_for(spec.arguments).check_schema(spec.arguments)
    except jsonschema.SchemaError as exc:
        return f"arguments is not a valid JSON Schema: {exc.message}"
    return pattern_problem(spec.arguments, "arguments")


def _dependency_problem(kind: str, name: str, obj: dict[str, Any] | None, unreachable_ok: bool = False
                        ) -> Readiness | None:
    """Why a referenced object keeps its dependent from being ready, or None if it is ready (or, `unreachable_ok`,
    not ready only because its provider does not answer now)."""
    if obj is None:
        return not_ready(ReadinessReason(f"{kind}NotFound"), f"{kind} {name!r} not found")
    status = obj.get("status") or {}
    if status.get("ready"):
        return None
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), {})
    if unreachable_ok and ready.get("reason") == ReadinessReason.UNREACHABLE:
        return None
    if "ready" not in status:
        return not_ready(ReadinessReason.DEPENDENCY_PENDING, f"{kind} {name!r} is not reconciled yet")
    return not_ready(ReadinessReason(f"{kind}NotReady"), f"{kind} {name!r} is not ready: {status.get('message', '')}")


def _duplicates(names: list[str]) -> list[str]:
    return sorted(n for n, count in Counter(names).items() if count > 1)


def discovered(server: MCPServer, status: dict[str, Any] | None) -> MCPServerStatus | None:
    """What discovery found for `server` as it is specified now (None: not discovered yet, or for an older spec)."""
    for raw in (status or {}).get("mcpServers") or []:
        if raw.get("name") == server.name:
            found = MCPServerStatus.model_validate(compact(raw))
            return found if found.config_hash == server.config_hash() else None
    return None


def mcp_problem(server: MCPServer, found: MCPServerStatus | None) -> Readiness | None:
    if found is None:
        return not_ready(ReadinessReason.MCP_DISCOVERY_PENDING, f"MCP server {server.name!r}: listing its tools")
    if not found.ready:
        return not_ready(ReadinessReason.MCP_SERVER_FAILED, f"MCP server {server.name!r}: {found.message}")
    for tool in found.tools:  # the server's schemas are checked like a Tool's: the actor matches their patterns
        if problem := pattern_problem(tool.input_schema, "inputSchema"):
            return not_ready(ReadinessReason.INVALID_TOOL, f"MCP server {server.name!r}: tool {tool.name!r}: {problem}")
    return None


def toolset_readiness(namespace: str, spec: ToolSetSpec, catalog: Catalog,
                      status: dict[str, Any] | None = None) -> Readiness:
    """`status`: the ToolSet's own, for what discovery found on its MCP servers."""
    names: list[str] = []
    for tool in spec.tools:
        if problem := tool_problem(tool):
            return not_ready(ReadinessReason.INVALID_TOOL, f"tool {tool.name!r}: {problem}")
        names.append(tool.name)
    for ref in spec.tool_refs:
        if problem := _dependency_problem("Tool", ref.name, catalog.get("Tool", namespace, ref.name)):
            return problem
        names.append(llm_tool_name(ref.name))
    for server in spec.mcp_servers:
        found = discovered(server, status)
        if problem := mcp_problem(server, found):
            return problem
        names.extend(t.llm_name for t in found.tools)
    if dupes := _duplicates(names):
        return not_ready(ReadinessReason.DUPLICATE_TOOL, f"duplicate tool names: {', '.join(dupes)}")
    return Readiness(True, ReadinessReason.READY, f"{len(names)} tools", names)


def agent_readiness(namespace: str, spec: AgentSpec, catalog: Catalog, delegates: bool = True,
                    started: bool = False) -> Readiness:
    """Ready when the LLM and every ToolSet are ready and (`delegates`) every delegate tool's Agent exists. For a
    run already `started`, an LLM whose provider does not answer now (Unreachable) does not hold it back: the run
    rides that out under its own LLM.spec.retry, and a new actor for it (after a back-off) must be able to start.

    "Exists" is an Agent object of that name in the namespace, ready or not: readiness that waited for the
    target's readiness would never come for an agent delegating to itself or to an agent above it (a -> b -> a),
    which the loop refuses per call anyway. A target that exists but is not ready holds its child runs Pending,
    saying so, until they time out; one that is gone when a call is made fails the call (the reconciler)."""
    if problem := _dependency_problem("LLM", spec.llm_ref.name, catalog.get("LLM", namespace, spec.llm_ref.name),
                                      unreachable_ok=started):
        return problem
    names: list[str] = []
    for ref in spec.toolset_refs:
        toolset = catalog.get("ToolSet", namespace, ref.name)
        if problem := _dependency_problem("ToolSet", ref.name, toolset):
            return problem
        names.extend(toolset["status"].get("tools", []))
    if dupes := _duplicates(names):
        return not_ready(ReadinessReason.DUPLICATE_TOOL, f"tool names offered by more than one ToolSet: {', '.join(dupes)}")
    missing = [(tool, agent) for tool, agent in delegate_targets(namespace, spec, catalog)
               if catalog.get("Agent", namespace, agent) is None] if delegates else []
    if missing:
        listed = "; ".join(f"delegate tool {tool!r}: Agent {agent!r} not found" for tool, agent in missing)
        return not_ready(ReadinessReason.DELEGATE_NOT_FOUND, listed)
    return Readiness(True, ReadinessReason.READY, f"LLM {spec.llm_ref.name!r} and {len(names)} tools ready", names)


def delegate_targets(namespace: str, spec: AgentSpec, catalog: Catalog) -> list[tuple[str, str]]:
    """(tool name, Agent) of the agent's delegate tools, from the ToolSets and Tools that exist."""
    targets = []
    for ref in spec.toolset_refs:
        toolset, _ = parse(ToolSetSpec, (catalog.get("ToolSet", namespace, ref.name) or {}).get("spec") or {})
        for tool in toolset.tools if toolset else ():
            if tool.execution.delegate is not None:
                targets.append((tool.name, tool.execution.delegate.agent_ref.name))
        for tool_ref in toolset.tool_refs if toolset else ():
            found, _ = parse(ToolSpec, (catalog.get("Tool", namespace, tool_ref.name) or {}).get("spec") or {})
            if found is not None and found.execution.delegate is not None:
                targets.append((llm_tool_name(tool_ref.name), found.execution.delegate.agent_ref.name))
    return targets


def _resolved(name: str, spec: ToolSpec) -> ResolvedTool:
    execution = spec.execution
    default = (BUILTIN_ARGUMENTS[execution.builtin.name] if execution.builtin
               else DELEGATE_ARGUMENTS if execution.delegate else EMPTY_ARGUMENTS)
    return ResolvedTool(name=name, description=spec.description, parameters=spec.arguments or default,
                        execution=execution, idempotent=spec.idempotent, requires_approval=spec.requires_approval,
                        approval_timeout_seconds=spec.approval_timeout_seconds)


def _resolved_mcp(namespace: str, toolset: str, server: MCPServer, found: MCPServerStatus) -> list[ResolvedTool]:
    """The discovered tools of one MCP server. Calls are side-effecting (journaled Started, at most once after a
    crash) unless the server says the tool is read-only or idempotent."""
    return [ResolvedTool(name=t.llm_name, description=t.description or t.name,
                         parameters=t.input_schema or EMPTY_ARGUMENTS, idempotent=t.idempotent,
                         execution=ResolvedExecution(mcp=ResolvedMCP(namespace=namespace, toolset=toolset,
                                                                     server=server, tool=t.name)))
            for t in found.tools]


def resolve_tools(namespace: str, spec: AgentSpec, catalog: Catalog) -> list[ResolvedTool]:
    """The tools an agent offers its LLM. Call only when the agent is ready."""
    tools: list[ResolvedTool] = []
    for ref in spec.toolset_refs:
        obj = catalog.get("ToolSet", namespace, ref.name)
        toolset = ToolSetSpec.model_validate(obj["spec"])
        tools.extend(_resolved(t.name, t) for t in toolset.tools)
        for tool_ref in toolset.tool_refs:
            tool_spec = ToolSpec.model_validate(catalog.get("Tool", namespace, tool_ref.name)["spec"])
            tools.append(_resolved(llm_tool_name(tool_ref.name), tool_spec))
        for server in toolset.mcp_servers:
            if (found := discovered(server, obj.get("status"))) is not None and found.ready:
                tools.extend(_resolved_mcp(namespace, ref.name, server, found))
    return tools


def parse(model: type, raw: dict[str, Any]) -> tuple[Any, str | None]:
    """(model, None) or (None, a one-line error) — for specs the schema let through but pydantic rejects."""
    try:
        return model.model_validate(raw or {}), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        return None, f"{where}: {first['msg']}"


def tool_readiness(spec: ToolSpec) -> Readiness:
    if problem := tool_problem(spec):
        return not_ready(ReadinessReason.INVALID_TOOL, problem)
    kind = spec.execution.kind
    note = " (each call runs as a Kubernetes Job)" if kind == "container" else ""
    return Readiness(True, ReadinessReason.READY, f"{kind} tool{note}")


def evaluate(kind: str, namespace: str, raw_spec: dict[str, Any], catalog: Catalog,
             raw_status: dict[str, Any] | None = None) -> Readiness:
    """Readiness of a Tool, ToolSet or Agent from its raw spec (and a ToolSet's status: its MCP discovery)."""
    model = {"Tool": ToolSpec, "ToolSet": ToolSetSpec, "Agent": AgentSpec}[kind]
    spec, error = parse(model, raw_spec)
    if error:
        return not_ready(ReadinessReason.INVALID_SPEC, error)
    if kind == "Tool":
        return tool_readiness(spec)
    if kind == "ToolSet":
        return toolset_readiness(namespace, spec, catalog, raw_status)
    return agent_readiness(namespace, spec, catalog)


def run_spec(ref: TaskRunRef, agent_name: str, user_input: str, catalog: Catalog, api_key: str | None,
             epoch: int = 1, *, max_turns: int = 50, lineage: list[str] | None = None,
             inputs: dict[str, CallInput] | None = None, max_delegation_depth: int = 5,
             traceparent: str | None = None, max_parallel_tool_calls: int = 4, json_logs: bool = False,
             caps: RunCaps | None = None, local_tool_timeout_seconds: float = 10) -> RunSpec:
    """Everything the actor needs to run, resolved from the catalog. Call only when the agent is ready."""
    agent = AgentSpec.model_validate(catalog.get("Agent", ref.namespace, agent_name)["spec"])
    llm = LLMSpec.model_validate(catalog.get("LLM", ref.namespace, agent.llm_ref.name)["spec"])
    return RunSpec(taskrun=ref, epoch=epoch, agent=agent_name, llm=llm, api_key=api_key, system_prompt=agent.system_prompt,
                   context=agent.context,
                   user_input=user_input, tools=resolve_tools(ref.namespace, agent, catalog), max_turns=max_turns,
                   lineage=lineage or [], inputs=inputs or {}, max_delegation_depth=max_delegation_depth,
                   traceparent=traceparent, max_parallel_tool_calls=max_parallel_tool_calls, json_logs=json_logs,
                   caps=caps or RunCaps(), local_tool_timeout_seconds=local_tool_timeout_seconds)
