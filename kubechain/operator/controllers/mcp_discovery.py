"""MCP tool discovery: the operator lists each MCP server's tools into the ToolSet's status.mcpServers.

- When: at once when a server is new or its connection spec changed (the ToolSet's event handler asks), and
  on a timer: every `refreshSeconds` (default 5 min) for a server that answered, every 30 s for one that failed.
- How: one connection per discovery (stdio: the command runs in the operator's process; http: a streamable
  HTTP session), closed right after `tools/list`: the operator keeps no MCP processes or sessions between
  refreshes. Discovery state is keyed by (namespace, ToolSet, server): one task per ToolSet at a time, and a
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

from kubechain.api.v1alpha1 import GROUP, VERSION, MCPServer, MCPServerStatus, ToolSetSpec
from kubechain.operator.kube import Kube
from kubechain.core.resolve import parse

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


def stdio_refused(server: MCPServer, allowed: tuple[str, ...]) -> str | None:
    """Why the operator will not start this stdio server (KUBECHAIN_MCP_STDIO_COMMANDS), or None."""
    if server.stdio is None or "*" in allowed or server.stdio.command in allowed:
        return None
    return (f"command {server.stdio.command!r} is not allowed for stdio MCP servers (the operator's "
            f"KUBECHAIN_MCP_STDIO_COMMANDS: {', '.join(allowed) or 'none'})")


def request(kube: Kube, namespace: str, name: str, spec: dict[str, Any], status: dict[str, Any],
            allowed: tuple[str, ...] = ("*",)) -> None:
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
    _tasks[key] = asyncio.create_task(_discover(kube, namespace, name, todo, allowed), name=f"mcp-discovery {namespace}/{name}")


def forget(namespace: str, name: str) -> None:
    """The ToolSet is gone: stop its discovery."""
    task = _tasks.pop((namespace, name), None)
    if task is not None:
        task.cancel()


async def _discover(kube: Kube, namespace: str, name: str, servers: list[MCPServer],
                    allowed: tuple[str, ...]) -> None:
    try:
        results = await asyncio.gather(*(discover_server(kube, namespace, s, allowed) for s in servers))
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


async def discover_server(kube: Kube, namespace: str, server: MCPServer,
                          allowed: tuple[str, ...] = ("*",)) -> MCPServerStatus:
    from kubechain.runtime import mcpclient  # the SDK only where a ToolSet has MCP servers

    if refused := stdio_refused(server, allowed):  # never started: the ToolSet stays not ready, no actor gets it
        return mcpclient.failed_status(server, refused)
    values: dict[tuple[str, str], str] = {}
    for secret, key in sorted(server.secret_refs()):
        found = await kube.secret_value(namespace, secret, key)
        if found.problem:
            return mcpclient.failed_status(server, found.problem)
        values[(secret, key)] = found.value
    return await mcpclient.discover(server, lambda secret, key: values[(secret, key)])


def _has_mcp(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return bool(spec.get("mcpServers") or status.get("mcpServers"))


@kopf.timer(GROUP, VERSION, "toolsets", id="mcp-refresh", when=_has_mcp, interval=TICK_SECONDS,
            initial_delay=TICK_SECONDS)
async def refresh(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo,
                  **_: Any) -> None:
    request(memo.state.kube, namespace, name, dict(spec), dict(status), memo.state.settings.mcp.stdio_commands)
