"""MCP tools, the pure parts: LLM names, status shaping, readiness and resolution from discovered status,
when discovery is due, how results read. (Real servers: test_mcp_sessions.py and tests/integration/test_mcp.py.)"""
from datetime import datetime, timedelta, timezone

import pytest
from mcp_types import CallToolResult, ImageContent, TextContent, Tool, ToolAnnotations

from kubechain.runtime import mcpclient
from kubechain.api.runspec import ResolvedExecution, ResolvedTool
from kubechain.api.v1alpha1 import MCPServer, ToolExecution, ToolSetSpec
from kubechain.operator.controllers.mcp_discovery import due, merged
from kubechain.core.naming import mcp_tool_name
from kubechain.core.resolve import evaluate, resolve_tools
from kubechain.api.v1alpha1 import AgentSpec

TIME = MCPServer.model_validate({"name": "time", "stdio": {"command": "mcp-server-time"}})
WEB = MCPServer.model_validate({"name": "web", "http": {"url": "http://mcp.example/mcp", "headers": [
    {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "web-token", "key": "token"}}},
    {"name": "X-Plain", "value": "1"}]}})
SCHEMA = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}


def tool(name, schema=SCHEMA, **hints):
    return Tool(name=name, description=f"the {name} tool", input_schema=schema,
                annotations=ToolAnnotations(**hints) if hints else None)


# --- names -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("server, tool_name, expected", [
    pytest.param("time", "get_current_time", "time__get_current_time", id="kept"),
    pytest.param("everything", "get-env", "everything__get-env", id="dash-kept"),
])
def test_llm_names_are_server_prefixed(server, tool_name, expected):
    assert mcp_tool_name(server, tool_name) == expected


def test_llm_names_are_sanitised_and_bounded_deterministically():
    dotted, slashed = mcp_tool_name("fs", "read.file"), mcp_tool_name("fs", "read/file")
    assert dotted.startswith("fs__read_file_") and slashed.startswith("fs__read_file_")
    assert dotted != slashed != mcp_tool_name("fs", "read_file") == "fs__read_file"  # no collision by cleaning
    long = mcp_tool_name("s" * 32, "t" * 100)
    assert len(long) == 64 and long == mcp_tool_name("s" * 32, "t" * 100)
    assert long != mcp_tool_name("s" * 32, "t" * 99)
    import re
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in (dotted, slashed, long))


# --- spec ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, error", [
    pytest.param({"name": "x"}, "exactly one of stdio, http", id="no-transport"),
    pytest.param({"name": "x", "stdio": {"command": "c"}, "http": {"url": "http://h"}}, "exactly one", id="both"),
    pytest.param({"name": "Bad_Name", "stdio": {"command": "c"}}, "pattern", id="bad-name"),
    pytest.param({"name": "x", "http": {"url": "ftp://h"}}, "pattern", id="bad-url"),
])
def test_server_spec_is_checked(raw, error):
    with pytest.raises(ValueError, match=error):
        MCPServer.model_validate(raw)


def test_server_names_are_unique_in_a_toolset():
    with pytest.raises(ValueError, match="unique within a ToolSet: time"):
        ToolSetSpec.model_validate({"mcpServers": [TIME.to_wire(), TIME.to_wire()]})


def test_config_hash_follows_the_connection_not_the_refresh_period():
    changed = TIME.model_copy(update={"refresh_seconds": 60})
    assert changed.config_hash() == TIME.config_hash()
    assert MCPServer.model_validate({"name": "time", "stdio": {"command": "other"}}).config_hash() != TIME.config_hash()


def test_secret_refs_of_headers_and_env():
    assert WEB.secret_refs() == {("web-token", "token")}
    env = MCPServer.model_validate({"name": "s", "stdio": {"command": "c", "env": [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}}, {"name": "B", "value": "b"}]}})
    assert env.secret_refs() == {("sec", "k")}


# --- status shaping ------------------------------------------------------------------------------------------

def test_server_status_lists_usable_tools_with_llm_names_and_hints():
    status = mcpclient.server_status(TIME, [
        tool("get_current_time", read_only_hint=True), tool("set_clock", destructive_hint=True),
        tool("broken", schema={"type": "string"}), tool("plain")], "mcp-time 1.0")
    assert [t.llm_name for t in status.tools] == ["time__get_current_time", "time__set_clock", "time__plain"]
    assert status.ready and status.message == "3 tools; left out: broken (its input schema is not of type object)"
    assert [t.idempotent for t in status.tools] == [True, False, False]
    assert status.config_hash == TIME.config_hash() and status.server_info == "mcp-time 1.0"
    wire = status.to_entry()
    assert wire["tools"][0]["inputSchema"] == SCHEMA and wire["tools"][0]["annotations"] == {"readOnlyHint": True}


def test_failed_status():
    status = mcpclient.failed_status(TIME, "cannot start 'mcp-server-time': No such file or directory")
    assert not status.ready and status.tools == [] and "No such file" in status.message


# --- readiness and resolution --------------------------------------------------------------------------------

class DictCatalog:
    def __init__(self, objects):
        self.objects = objects

    def get(self, kind, namespace, name):
        return self.objects.get((kind, name))

    def names(self, kind, namespace):
        return [n for k, n in self.objects if k == kind]


def toolset(status_servers, servers=(TIME,)):
    spec = {"tools": [{"name": "echo", "description": "e", "execution": {"builtin": {"name": "echo"}}}],
            "mcpServers": [s.to_wire() for s in servers]}
    return spec, {"ready": True, "message": "", "mcpServers": [s.to_entry() for s in status_servers]}


def test_toolset_waits_for_discovery_of_the_current_spec():
    spec, status = toolset([])
    readiness = evaluate("ToolSet", "ns", spec, DictCatalog({}), status)
    assert (readiness.ready, readiness.reason) == (False, "MCPDiscoveryPending")
    old = mcpclient.server_status(MCPServer.model_validate({"name": "time", "stdio": {"command": "old"}}),
                                  [tool("get_current_time")])
    spec, status = toolset([old])
    assert evaluate("ToolSet", "ns", spec, DictCatalog({}), status).reason == "MCPDiscoveryPending"


def test_toolset_offers_discovered_tools():
    spec, status = toolset([mcpclient.server_status(TIME, [tool("get_current_time"), tool("convert_time")])])
    readiness = evaluate("ToolSet", "ns", spec, DictCatalog({}), status)
    assert readiness.ready and readiness.tools == ["echo", "time__get_current_time", "time__convert_time"]


def test_a_failed_server_makes_the_toolset_not_ready_with_its_error():
    spec, status = toolset([mcpclient.failed_status(TIME, "cannot start 'mcp-server-time': No such file")])
    readiness = evaluate("ToolSet", "ns", spec, DictCatalog({}), status)
    assert (readiness.ready, readiness.reason) == (False, "MCPServerFailed")
    assert readiness.message == "MCP server 'time': cannot start 'mcp-server-time': No such file"


def test_resolution_keys_mcp_tools_by_namespace_toolset_and_server():
    spec, status = toolset([mcpclient.server_status(TIME, [tool("get_current_time", idempotent_hint=True),
                                                           tool("convert_time")])])
    objects = {("ToolSet", "clock"): {"spec": spec, "status": status}}
    agent = AgentSpec.model_validate({"llmRef": {"name": "l"}, "systemPrompt": "p", "toolsetRefs": [{"name": "clock"}]})
    tools = {t.name: t for t in resolve_tools("team-a", agent, DictCatalog(objects))}
    assert list(tools) == ["echo", "time__get_current_time", "time__convert_time"]
    get = tools["time__get_current_time"]
    assert get.execution.kind == "mcp" and not get.execution.pure and get.idempotent
    assert not tools["time__convert_time"].idempotent  # side-effecting unless the server says otherwise
    assert get.execution.mcp.connection_key == ("team-a", "clock", "time") and get.execution.mcp.tool == "get_current_time"
    assert get.parameters == SCHEMA and get.openai_schema()["function"]["name"] == "time__get_current_time"


def test_resolved_tool_carries_mcp_secrets_and_survives_serialisation():
    spec, status = toolset([mcpclient.server_status(WEB, [tool("search")])], servers=(WEB,))
    agent = AgentSpec.model_validate({"llmRef": {"name": "l"}, "systemPrompt": "p", "toolsetRefs": [{"name": "kit"}]})
    [_, search] = resolve_tools("ns", agent, DictCatalog({("ToolSet", "kit"): {"spec": spec, "status": status}}))
    assert search.secret_refs() == {("web-token", "token")}
    again = ResolvedTool.model_validate_json(search.model_dump_json())
    assert again.execution.mcp == search.execution.mcp and again.execution.kind == "mcp"


def test_tool_executions_still_resolve_and_exactly_one_kind_holds():
    plain = ResolvedTool(name="e", description="e", parameters={}, execution=ToolExecution(builtin={"name": "echo"}))
    assert isinstance(plain.execution, ResolvedExecution) and plain.execution.mcp is None and plain.execution.pure
    spec, status = toolset([mcpclient.server_status(TIME, [tool("t")])])
    agent = AgentSpec.model_validate({"llmRef": {"name": "l"}, "systemPrompt": "p", "toolsetRefs": [{"name": "k"}]})
    mcp = resolve_tools("ns", agent, DictCatalog({("ToolSet", "k"): {"spec": spec, "status": status}}))[1].execution.mcp
    with pytest.raises(ValueError, match="exactly one"):
        ResolvedExecution(builtin={"name": "echo"}, mcp=mcp)


# --- when discovery runs -------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def entry(server, ready=True, ago=0, config_hash=None):
    return {"name": server.name, "ready": ready, "configHash": config_hash or server.config_hash(),
            "lastDiscoveryTime": (NOW - timedelta(seconds=ago)).isoformat().replace("+00:00", "Z")}


@pytest.mark.parametrize("entries, expected", [
    pytest.param([], ["time"], id="never-asked"),
    pytest.param([entry(TIME, ago=10)], [], id="fresh"),
    pytest.param([entry(TIME, ago=301)], ["time"], id="refresh-due"),
    pytest.param([entry(TIME, ready=False, ago=10)], [], id="failed-recently"),
    pytest.param([entry(TIME, ready=False, ago=31)], ["time"], id="failed-retry-due"),
    pytest.param([entry(TIME, ago=10, config_hash="old")], ["time"], id="spec-changed"),
])
def test_due(entries, expected):
    assert [s.name for s in due([TIME], entries, NOW)] == expected


def test_merged_keeps_spec_order_drops_removed_servers_and_results_for_an_older_spec():
    fresh = mcpclient.server_status(TIME, [tool("t")])
    stale_result = mcpclient.server_status(MCPServer.model_validate({"name": "web", "stdio": {"command": "x"}}), [])
    old = [{"name": "gone"}, entry(WEB)]
    assert [e["name"] for e in merged([WEB, TIME], old, [fresh, stale_result])] == ["web", "time"]
    assert merged([WEB, TIME], old, [fresh, stale_result])[0] == entry(WEB)  # the stale result was not taken
    assert merged([], old, []) == []


# --- results -------------------------------------------------------------------------------------------------

def test_result_text():
    result = CallToolResult(content=[TextContent(type="text", text="a"), ImageContent(type="image", data="AAAA",
                                                                                   mime_type="image/png"),
                                     TextContent(type="text", text="b")])
    assert mcpclient.result_text(result) == "a\n[image image/png, 3 bytes]\nb"
    assert mcpclient.result_text(CallToolResult(content=[], structured_content={"x": 1})) == '{"x": 1}'
