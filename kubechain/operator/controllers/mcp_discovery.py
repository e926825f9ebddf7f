"""MCP tool discovery: the operator lists each MCP server's tools into the ToolSet's status.mcpServers.

- When: at once when a server is new or its connection spec changed (the ToolSet's event handler asks), and
  on a timer: every `refreshSeconds` (default 5 min) for a server that answered, every 30 s for one that failed.
- How: one connection per discovery, closed right after `tools/list`. stdio: a Ray task on a worker starts the
  command (RayGateway.discover_stdio; never the operator's own process, whose account reads Secrets), after the
  namespace's code-tool rules allow it (kubechain/core/codetools.py: checked here and again in the task); http:
  a streamable HTTP session from the operator. Nothing is kept between refreshes. Discovery state is keyed by (namespace, ToolSet, server): one task per ToolSet at a time, and a
  result is written only for the server spec (config hash) it was obtained with.
- A failed server is a status entry too (ready false + the error): the ToolSet is then not ready with that
  message (kubechain/resolve.py), and its Agents follow.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import kopf

from kubechain.api.runspec import secret_key
from kubechain.api.v1alpha1 import GROUP, VERSION, MCPServer, MCPServerStatus, ToolSetSpec
from kubechain.core.codetools import stdio_problem
from kubechain.core.resolve import parse
from kubechain.operator import codetools
from kubechain.operator.raygateway import RayUnavailable
from kubechain.operator.state import OperatorState

log = logging.getLogger(__name__)

TICK_SECONDS = 30   # how often the timer looks for servers due for a refresh
RETRY_SECONDS = 30  # a failed server is asked again after this long (or its refreshSeconds, if shorter)

_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}  # (namespace, ToolSet) -> its running discovery


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def due(servers: list[MCPServer], entries: list[dict[str, Any]], now: datetime) -> list[MCPServer]:
    """The servers to ask now: never asked, asked with another spec, or last asked longer ago than their period."""
    by_name = {e.get("name"): e for e in entries}
    todo = []
    for server in servers:
        entry = by_name.get(server.name)
        if entry is None or entry.get("configHash") != server.config_hash():
            todo.append(server)
            continue
        last = _time(entry.get("lastDiscoveryTime"))
        period = server.refresh_seconds if entry.get("ready") else min(RETRY_SECONDS, server.refresh_seconds)
        if last is None or (now - last).total_seconds() >= period:
            todo.append(server)
    return todo


def merged(servers: list[MCPServer], entries: list[dict[str, Any]], results: list[MCPServerStatus]) -> list[dict]:
    """status.mcpServers after a discovery: in spec order; a result only for the spec it was obtained with;
    servers no longer in the spec dropped."""
    current = {s.name: s.config_hash() for s in servers}
    by_name = {e.get("name"): e for e in entries}
    by_name.update({r.name: r.to_entry() for r in results if current.get(r.name) == r.config_hash})
    return [by_name[s.name] for s in servers if s.name in by_name]


def request(state: OperatorState, namespace: str, name: str, spec: dict[str, Any], status: dict[str, Any]) -> None:
    """Start discovering what is due for this ToolSet, unless a discovery of it is already running."""
    parsed, error = parse(ToolSetSpec, spec)
    if error:
        return
    entries = status.get("mcpServers") or []
    todo = due(parsed.mcp_servers, entries, datetime.now(timezone.utc))
    stale = {e.get("name") for e in entries} - {s.name for s in parsed.mcp_servers}
    key = (namespace, name)
    if not (todo or stale) or (key in _tasks and not _tasks[key].done()):
        return
    _tasks[key] = asyncio.create_task(_discover(state, namespace, name, todo), name=f"mcp-discovery {namespace}/{name}")


def forget(namespace: str, name: str) -> None:
    """The ToolSet is gone: stop its discovery."""
    task = _tasks.pop((namespace, name), None)
    if task is not None:
        task.cancel()


async def _discover(state: OperatorState, namespace: str, name: str, servers: list[MCPServer]) -> None:
    kube = state.kube
    try:
        results = await asyncio.gather(*(discover_server(state, namespace, s) for s in servers))
        fresh = await kube.get("toolsets", namespace, name)  # the spec may have moved on while we asked
        if fresh is None:
            return
        spec, error = parse(ToolSetSpec, fresh.get("spec") or {})
        if error:
            return
        old = (fresh.get("status") or {}).get("mcpServers") or []
        new = merged(spec.mcp_servers, old, list(results))
        if new != old:
            await kube.patch_status("toolsets", namespace, name, {"mcpServers": new})
        for result in results:
            log.info("MCP server %s/%s/%s: %s", namespace, name, result.name, result.message)
    except asyncio.CancelledError:
        raise
    except Exception:  # the timer asks again
        log.exception("MCP discovery of ToolSet %s/%s failed", namespace, name)


async def discover_server(state: OperatorState, namespace: str, server: MCPServer) -> MCPServerStatus:
    from kubechain.runtime import mcpclient  # the SDK only where a ToolSet has MCP servers

    rules = None
    if server.stdio is not None:  # refused before its Secrets are read or a task is sent
        rules = await codetools.policy(state.kube, state.settings.code_tools, namespace)
        if refused := stdio_problem(rules, server.stdio):  # the ToolSet stays not ready, no actor gets it
            return mcpclient.failed_status(server, refused)
    values: dict[str, str] = {}
    for secret, key in sorted(server.secret_refs()):
        found = await state.kube.secret_value(namespace, secret, key)
        if found.problem or found.value is None:
            return mcpclient.failed_status(server, found.problem or f"Secret {secret!r} has no value")
        values[secret_key(secret, key)] = found.value
    if rules is None:  # http: the operator connects itself (a network call; nothing starts here)
        return await mcpclient.discover(server, lambda secret, key: values[secret_key(secret, key)])
    try:
        return await asyncio.to_thread(state.ray.discover_stdio, server, values, rules)
    except (RayUnavailable, TimeoutError) as exc:  # retried like any failed server
        return mcpclient.failed_status(server, f"cannot list its tools on Ray: {exc}")


def _has_mcp(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return bool(spec.get("mcpServers") or status.get("mcpServers"))


@kopf.timer(GROUP, VERSION, "toolsets", id="mcp-refresh", when=_has_mcp, interval=TICK_SECONDS,
            initial_delay=TICK_SECONDS)
async def refresh(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo,
                  **_: Any) -> None:
    request(memo.state, namespace, name, dict(spec), dict(status))
