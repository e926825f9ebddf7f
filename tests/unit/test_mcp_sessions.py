"""The actor's MCP sessions and the operator's discovery against a real stdio server (`mcp-server-time`, PyPI):
no cluster needed, a few seconds."""
import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from actors.tools.executor import LocalToolExecutor
from kubechain.runtime import mcpclient
from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.runspec import ResolvedExecution, ResolvedMCP, ResolvedTool, secret_key
from kubechain.api.v1alpha1 import MCPServer

TIME_SERVER = shutil.which("mcp-server-time") or str(Path(sys.executable).parent / "mcp-server-time")
# A namespace the cluster admin opted in, with any command and environment allowed
ALLOWED = CodeToolPolicy(namespace="ns", namespace_allowed=True, stdio_commands=["*"], env_names=["*"])
TIME = MCPServer.model_validate({"name": "time", "stdio": {"command": TIME_SERVER}, "timeoutSeconds": 30})


def resolved(server: MCPServer, tool: str, namespace: str = "ns", name: str = "") -> ResolvedTool:
    return ResolvedTool(name=name or f"{server.name}__{tool}", description=tool, parameters={"type": "object"},
                        execution=ResolvedExecution(mcp=ResolvedMCP(namespace=namespace, toolset="kit",
                                                                    server=server, tool=tool)))


def test_discovery_of_a_real_server():
    status = asyncio.run(mcpclient.discover(TIME, lambda *_: ""))
    assert status.ready, status.message
    names = {t.name: t for t in status.tools}
    assert {"get_current_time", "convert_time"} <= set(names)
    assert names["get_current_time"].llm_name == "time__get_current_time"
    assert "timezone" in names["get_current_time"].input_schema["properties"]
    assert names["get_current_time"].idempotent  # the server says readOnlyHint


def test_discovery_of_a_missing_command_says_so():
    server = MCPServer.model_validate({"name": "bad", "stdio": {"command": "/nonexistent/mcp-server"}})
    status = asyncio.run(mcpclient.discover(server, lambda *_: ""))
    assert not status.ready and status.message == "cannot start '/nonexistent/mcp-server': No such file or directory"


def test_discovery_of_a_server_that_exits_shows_its_stderr():
    server = MCPServer.model_validate({"name": "dies", "timeoutSeconds": 20, "stdio": {
        "command": sys.executable, "args": ["-c", "import sys; sys.stderr.write('no API token set\\n'); sys.exit(2)"]}})
    status = asyncio.run(mcpclient.discover(server, lambda *_: ""))
    assert not status.ready and "no API token set" in status.message, status.message


def test_executor_calls_share_one_session_per_server_and_report_errors():
    tools = [resolved(TIME, "get_current_time"), resolved(TIME, "convert_time"), resolved(TIME, "no_such_tool")]

    async def main():
        executor = LocalToolExecutor(tools, code_tools=ALLOWED)
        calls = await asyncio.gather(*(executor.execute("time__get_current_time", f'{{"timezone": "{tz}"}}', str(i),
                                                        f"k{i}") for i, tz in enumerate(["Europe/Paris", "Asia/Tokyo"])))
        sessions = executor._mcp._sessions
        assert list(sessions) == [("ns", "kit", "time")]  # concurrent first calls opened one session
        bad_zone = await executor.execute("time__get_current_time", '{"timezone": "Mars/Olympus"}', "3", "k3")
        unknown = await executor.execute("time__no_such_tool", "{}", "4", "k4")
        await executor._mcp.aclose()
        return calls, bad_zone, unknown

    (paris, tokyo), bad_zone, unknown = asyncio.run(main())
    assert paris.error is None and '"timezone": "Europe/Paris"' in paris.result
    assert tokyo.error is None and "Asia/Tokyo" in tokyo.result
    assert bad_zone.error and "Mars/Olympus" in bad_zone.error
    assert unknown.error and "no_such_tool" in unknown.error


def test_sessions_are_keyed_by_namespace():
    async def main():
        executor = LocalToolExecutor([resolved(TIME, "get_current_time", "a", "a__t"),
                                      resolved(TIME, "get_current_time", "b", "b__t")], code_tools=ALLOWED)
        await executor.execute("a__t", '{"timezone": "UTC"}', "1", "k1")
        await executor.execute("b__t", '{"timezone": "UTC"}', "2", "k2")
        keys = sorted(executor._mcp._sessions)
        await executor._mcp.aclose()
        return keys

    assert asyncio.run(main()) == [("a", "kit", "time"), ("b", "kit", "time")]


def test_env_from_secrets_reaches_a_stdio_server(tmp_path):
    script = tmp_path / "envserver.py"
    script.write_text(
        "import os\nfrom mcp.server.mcpserver import MCPServer\nserver = MCPServer('env')\n"
        "@server.tool()\ndef token() -> str:\n    return os.environ.get('API_TOKEN', 'unset')\n"
        "server.run('stdio')\n")
    server = MCPServer.model_validate({"name": "env", "timeoutSeconds": 30, "stdio": {
        "command": sys.executable, "args": [str(script)],
        "env": [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "value"}}}]}})
    from pydantic import SecretStr

    async def main():
        executor = LocalToolExecutor([resolved(server, "token")], {secret_key("tok", "value"): SecretStr("s3cret")},
                                     ALLOWED)
        outcome = await executor.execute("env__token", "{}", "1", "k1")
        await executor._mcp.aclose()
        return outcome

    outcome = asyncio.run(main())
    assert outcome.error is None and outcome.result == "s3cret"


def test_a_server_that_dies_is_restarted_at_the_next_call(tmp_path):
    script = tmp_path / "fragile.py"
    script.write_text(
        "import os\nfrom mcp.server.mcpserver import MCPServer\nserver = MCPServer('fragile')\n"
        "@server.tool()\ndef pid() -> str:\n    return str(os.getpid())\n"
        "@server.tool()\ndef crash() -> str:\n    os._exit(1)\n"
        "server.run('stdio')\n")
    server = MCPServer.model_validate({"name": "fragile", "timeoutSeconds": 30,
                                       "stdio": {"command": sys.executable, "args": [str(script)]}})

    async def main():
        executor = LocalToolExecutor([resolved(server, "pid"), resolved(server, "crash")], code_tools=ALLOWED)
        first = await executor.execute("fragile__pid", "{}", "1", "k1")
        crashed = await executor.execute("fragile__crash", "{}", "2", "k2")
        second = await executor.execute("fragile__pid", "{}", "3", "k3")
        await executor._mcp.aclose()
        return first, crashed, second

    first, crashed, second = asyncio.run(main())
    assert first.error is None and second.error is None and first.result != second.result  # a new process
    assert crashed.error == "MCP server 'fragile': Connection closed"
