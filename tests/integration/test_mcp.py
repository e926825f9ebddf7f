"""MCP servers in ToolSets, against real servers nobody here wrote: `mcp-server-time` (PyPI, stdio) and
`@modelcontextprotocol/server-everything` (npm, stdio and streamable HTTP; `make mcp-servers` installs it).

Discovery of a stdio server runs as a Ray task, calls in the TaskRun actors: both on the Ray workers (here, this
machine), never in the operator's process. Their namespaces are opted in to code tools (test_tenancy.py: when not).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.localenv import kubectl

from .conftest import Kube, agent, allow_code_tools, llm, secret, task

pytestmark = pytest.mark.integration

TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
EVERYTHING = Path(os.environ.get("KUBECHAIN_MCP_NPM", Path.home() / ".cache/kubechain/npm")) / \
    "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
NODE = shutil.which("node") or "/usr/bin/node"
needs_everything = pytest.mark.skipif(not EVERYTHING.exists(), reason="run `make mcp-servers` first")


@pytest.fixture(autouse=True)
def code_tools_allowed(kube):
    """These tests' namespaces are opted in to code tools by the cluster admin (test_tenancy.py: when not)."""
    allow_code_tools(kube)


def mcp_toolset(name: str, *servers: dict) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": name},
            "spec": {"mcpServers": list(servers)}}


def stdio(name: str, command: str, *args: str, env: list[dict] = (), **extra) -> dict:
    return {"name": name, "stdio": {"command": command, "args": list(args), "env": list(env)}, **extra}


def from_secret(name: str, secret_name: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def mcp_agent(kube: Kube, stack, toolset_manifest: dict, steps: list[dict], name: str = "assistant") -> str:
    """An Agent over `toolset_manifest`, its LLM scripted with `steps`; returns the LLM model name."""
    model = f"{kube.namespace}-{name}"
    stack.llm.set_script(model, steps)
    kube.apply([secret(), llm(name, stack.llm.base_url, model), toolset_manifest,
                agent(name, name, [toolset_manifest["metadata"]["name"]])])
    return model


def server_status(kube: Kube, toolset: str, timeout: float = 120) -> list[dict]:
    found = kube.wait_for("toolset", toolset, lambda o: (o.get("status") or {}).get("ready") is True,
                          timeout=timeout, what="ready (MCP tools discovered)")
    return found["status"]["mcpServers"]


def failed(kube: Kube, toolset: str, timeout: float = 120) -> dict:
    """The ToolSet once discovery failed (not merely pending)."""
    def done(o: dict) -> bool:
        conditions = (o.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c.get("reason") == "MCPServerFailed" for c in conditions)
    return kube.wait_for("toolset", toolset, done, timeout=timeout, what="failed (MCPServerFailed)")


def tool_messages(run: dict) -> list[str]:
    return [m["content"] for m in run["status"]["contextWindow"] if m["role"] == "tool"]


def test_stdio_time_server_is_discovered_and_called(kube, stack):
    model = mcp_agent(kube, stack, mcp_toolset("clock", stdio("time", TIME_SERVER)), [
        {"tool_calls": [{"name": "time__get_current_time", "arguments": {"timezone": "Europe/Paris"}}]},
        {"content": "Paris: {last_tool_result}"}])
    [server] = server_status(kube, "clock")
    assert server["ready"] and server["name"] == "time" and server["serverInfo"].startswith("mcp-time")
    tools = {t["name"]: t for t in server["tools"]}
    assert {"get_current_time", "convert_time"} <= set(tools)
    get = tools["get_current_time"]
    assert get["llmName"] == "time__get_current_time" and get["inputSchema"]["required"] == ["timezone"]
    assert get["annotations"]["readOnlyHint"] is True and get["description"]
    assert "time__get_current_time" in kube.get("toolset", "clock")["status"]["tools"]
    kube.wait_ready("agent", "assistant")

    kube.apply([task("now", "assistant", "What time is it in Paris?")])
    run = kube.wait_phase("now-run", "Completed", timeout=120)
    [result] = tool_messages(run)
    assert '"timezone": "Europe/Paris"' in result and '"datetime"' in result  # the real server's answer
    assert run["status"]["output"] == f"Paris: {result}"
    [call] = run["status"]["toolCallHistory"]
    assert (call["tool"], call["state"]) == ("time__get_current_time", "Succeeded")
    offered = [r for r in stack.llm.requests() if r["model"] == model][0]["tools"]
    assert {"time__get_current_time", "time__convert_time"} <= set(offered)


def test_bad_arguments_for_an_mcp_tool_come_back_as_a_tool_error(kube, stack):
    mcp_agent(kube, stack, mcp_toolset("clock", stdio("time", TIME_SERVER)), [
        {"tool_calls": [{"name": "time__convert_time", "arguments": {"source_timezone": "UTC", "time": 1200}}]},
        {"content": "I got: {last_tool_result}"}])
    kube.wait_ready("agent", "assistant", timeout=120)
    kube.apply([task("convert", "assistant", "Convert noon UTC to Tokyo time")])
    run = kube.wait_phase("convert-run", "Completed", timeout=120)
    [call] = run["status"]["toolCallHistory"]
    assert call["state"] == "Failed", call
    [message] = tool_messages(run)
    assert message.startswith("Error: ") and "target_timezone" in message and "'time'" in message, message


@pytest.fixture
def everything_http():
    """server-everything over streamable HTTP behind a proxy that demands `Authorization: Bearer <token>`."""
    if not EVERYTHING.exists():
        pytest.skip("run `make mcp-servers` first")
    port = free_port()
    server = subprocess.Popen([NODE, str(EVERYTHING), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = AuthProxy(f"http://127.0.0.1:{port}", token="tok-" + os.urandom(4).hex())
    try:
        wait_for_port(port)
        proxy.start()
        yield proxy
    finally:
        proxy.stop()
        server.terminate()
        server.wait(10)


def test_streamable_http_server_with_a_header_from_a_secret(kube, stack, everything_http):
    proxy = everything_http
    kube.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mcp-auth"},
                 "stringData": {"header": f"Bearer {proxy.token}", "wrong": "Bearer nope"}}])
    http = {"name": "everything", "http": {"url": f"{proxy.url}/mcp",
                                           "headers": [from_secret("Authorization", "mcp-auth", "header")]}}
    mcp_agent(kube, stack, mcp_toolset("remote", http), [
        {"tool_calls": [{"name": "everything__echo", "arguments": {"message": "hello over HTTP"}}]},
        {"content": "{last_tool_result}"}])
    [server] = server_status(kube, "remote")
    names = [t["llmName"] for t in server["tools"]]
    assert "everything__echo" in names and "everything__get-sum" in names
    discovery_requests = proxy.authorized

    kube.wait_ready("agent", "assistant")
    kube.apply([task("echo", "assistant", "Say hello")])
    run = kube.wait_phase("echo-run", "Completed", timeout=120)
    assert run["status"]["output"] == "Echo: hello over HTTP"
    assert proxy.authorized > discovery_requests and proxy.refused == 0  # the actor sent the header too

    # The same server with the wrong header: not ready, and the message says why.
    bad = {**http, "http": {**http["http"], "headers": [from_secret("Authorization", "mcp-auth", "wrong")]}}
    kube.apply([mcp_toolset("remote-bad", bad)])
    broken = failed(kube, "remote-bad")
    assert broken["status"]["message"].startswith("MCP server 'everything': ") and "401" in broken["status"]["message"]
    assert proxy.refused > 0


@needs_everything
def test_everything_over_stdio_with_env_from_a_secret(kube, stack):
    kube.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mcp-env"},
                 "stringData": {"token": "from-the-secret-42"}}])
    server = stdio("everything", NODE, str(EVERYTHING), "stdio", env=[from_secret("DEMO_TOKEN", "mcp-env", "token"),
                                                                      {"name": "PLAIN", "value": "plain-value"}])
    mcp_agent(kube, stack, mcp_toolset("local", server), [
        {"tool_calls": [{"name": "everything__get-env", "arguments": {}},
                        {"name": "everything__get-sum", "arguments": {"a": 40, "b": 2}}]},
        {"content": "done"}])
    [status] = server_status(kube, "local")
    assert status["serverInfo"].startswith("mcp-servers/everything")
    kube.wait_ready("agent", "assistant")
    kube.apply([task("env", "assistant", "Show the environment and add 40 and 2")])
    run = kube.wait_phase("env-run", "Completed", timeout=120)
    env_result, sum_result = tool_messages(run)
    assert "from-the-secret-42" in env_result and "plain-value" in env_result
    assert "KUBECONFIG" not in env_result and "RAY_" not in env_result  # only a minimal environment is inherited
    assert "42" in sum_result
    # The Secret's value is in the transcript only because this tool prints it: never in the ToolSet or events.
    assert "from-the-secret-42" not in kube.run("get", "toolset,agent,events", "-o", "json").stdout


@needs_everything
def test_same_server_name_in_two_namespaces_does_not_mix(kube, stack):
    other = Kube(stack, f"{kube.namespace}-b"[:60])
    kubectl(stack.kubeconfig, "create", "namespace", other.namespace)
    allow_code_tools(other)
    # Same ToolSet name, same server name `tools`, different servers.
    mcp_agent(kube, stack, mcp_toolset("kit", stdio("tools", TIME_SERVER)), [
        {"tool_calls": [{"name": "tools__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]},
        {"content": "{last_tool_result}"}])
    mcp_agent(other, stack, mcp_toolset("kit", stdio("tools", NODE, str(EVERYTHING), "stdio")), [
        {"tool_calls": [{"name": "tools__echo", "arguments": {"message": "from namespace b"}}]},
        {"content": "{last_tool_result}"}])
    a_tools = {t["name"] for t in server_status(kube, "kit")[0]["tools"]}
    b_tools = {t["name"] for t in server_status(other, "kit")[0]["tools"]}
    assert "get_current_time" in a_tools and "echo" not in a_tools
    assert "echo" in b_tools and "get_current_time" not in b_tools

    for k in (kube, other):
        k.wait_ready("agent", "assistant")
        k.apply([task("ask", "assistant", "go")])
    a_run, b_run = kube.wait_phase("ask-run", "Completed", 120), other.wait_phase("ask-run", "Completed", 120)
    assert '"timezone": "Asia/Tokyo"' in a_run["status"]["output"]
    assert b_run["status"]["output"] == "Echo: from namespace b"


def test_a_failing_server_makes_the_toolset_and_agent_not_ready_until_fixed(kube, stack):
    mcp_agent(kube, stack, mcp_toolset("clock", stdio("time", "/nonexistent/mcp-server-time")),
              [{"content": "unused"}])
    broken = failed(kube, "clock")
    assert broken["status"]["message"] == ("MCP server 'time': cannot start '/nonexistent/mcp-server-time': "
                                           "No such file or directory")
    [entry] = broken["status"]["mcpServers"]
    assert entry["ready"] is False and "No such file" in entry["message"] and entry.get("tools", []) == []
    ag = kube.wait_ready("agent", "assistant", ready=False)
    assert "ToolSet 'clock' is not ready: MCP server 'time': cannot start" in ag["status"]["message"]

    # The refresh timer asks a failed server again (every 30 s).
    kube.wait_for("toolset", "clock", lambda o: o["status"]["mcpServers"][0]["lastDiscoveryTime"]
                  != entry["lastDiscoveryTime"], timeout=150, what="retried by the refresh timer")

    # Fixing the spec is discovered at once (a changed server spec), and the Agent follows.
    kube.apply([mcp_toolset("clock", stdio("time", TIME_SERVER))])
    server_status(kube, "clock")
    kube.wait_ready("agent", "assistant")


# --- helpers -------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


class AuthProxy:
    """A streaming reverse proxy (in a thread) that lets through only requests with the right Authorization."""

    HOP = {"host", "content-length", "transfer-encoding", "connection"}

    def __init__(self, upstream: str, token: str):
        self.upstream, self.token = upstream, token
        self.authorized = self.refused = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request):
        from aiohttp import ClientSession, ClientTimeout, web

        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused += 1
            return web.Response(status=401, text="missing or wrong bearer token")
        self.authorized += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP | {"authorization"}}
        async with ClientSession(timeout=ClientTimeout(total=None)) as client:
            async with client.request(request.method, self.upstream + request.path_qs, headers=headers,
                                      data=await request.read()) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in self.HOP | {"content-encoding"}})
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except ConnectionResetError:  # the client closed its stream (e.g. the GET stream at the end)
                    pass
                return response

    async def _serve(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(30)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
