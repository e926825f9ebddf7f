"""MCP tool calls from a TaskRun actor: one client session per server, opened at its first call and kept for
the actor's life. Sessions are keyed by (namespace, ToolSet, server), never by a name alone: two namespaces'
servers called `github` are two servers. stdio servers are child processes of the actor, on its Ray node.

Each session is owned by a task of its own (the SDK's transports are anyio task groups, which must be
entered and left by the same task), so calls from any of the loop's concurrent tool tasks can share it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.runspec import ResolvedMCP
from kubechain.core.codetools import stdio_problem

from .executor import ToolOutcome

log = logging.getLogger(__name__)

Key = tuple[str, str, str]


class _Session:
    """A connection held open by its own task until close()."""

    def __init__(self, mcp: ResolvedMCP, secret: Callable[[str, str], str]):
        self._ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()
        self._task = asyncio.create_task(self._hold(mcp, secret), name=f"mcp {'/'.join(mcp.connection_key)}")

    async def _hold(self, mcp: ResolvedMCP, secret: Callable[[str, str], str]) -> None:
        from kubechain.runtime import mcpclient

        try:
            async with mcpclient.connect(mcp.server, secret) as session:
                self._ready.set_result(session)
                await self._closing.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the callers waiting for the session
            if not self._ready.done():
                self._ready.set_exception(mcpclient.MCPConnectError(mcpclient.describe(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP session %s ended: %s", "/".join(mcp.connection_key), mcpclient.describe(exc))

    @property
    def ended(self) -> bool:
        """The connection is gone (the server exited, the HTTP session broke...)."""
        return self._task.done()

    async def session(self) -> Any:
        return await asyncio.shield(self._ready)

    async def close(self) -> None:
        self._closing.set()
        try:
            await asyncio.wait_for(self._task, 5)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing is best effort
            self._task.cancel()


class MCPSessions:
    """The actor's MCP sessions, by (namespace, ToolSet, server)."""

    def __init__(self, secret: Callable[[str, str], str], code_tools: CodeToolPolicy | None = None):
        """`code_tools`: the admin's rules a stdio server is checked against before it starts (None: none starts)."""
        self._secret = secret
        self._code_tools = code_tools or CodeToolPolicy()
        self._sessions: dict[Key, _Session] = {}

    def _get(self, mcp: ResolvedMCP) -> _Session:
        key = mcp.connection_key
        if key in self._sessions and self._sessions[key].ended:
            del self._sessions[key]  # reconnect
        if key not in self._sessions:  # no await between the check and the insert: one session per key
            self._sessions[key] = _Session(mcp, self._secret)
        return self._sessions[key]

    async def _drop(self, mcp: ResolvedMCP, held: _Session) -> None:
        """Forget a broken session (the next call reconnects)."""
        if self._sessions.get(mcp.connection_key) is held:
            del self._sessions[mcp.connection_key]
        await held.close()

    async def call(self, mcp: ResolvedMCP, args: dict[str, Any]) -> ToolOutcome:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        from kubechain.runtime import mcpclient

        where = f"MCP server {mcp.server.name!r}"
        if mcp.server.stdio is not None and (refused := stdio_problem(self._code_tools, mcp.server.stdio)):
            return ToolOutcome(error=f"{where}: {refused}")  # nothing started
        held = self._get(mcp)
        try:
            session = await asyncio.wait_for(held.session(), mcp.server.timeout_seconds * 2)
        except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001
            await self._drop(mcp, held)
            reason = "no answer" if isinstance(exc, asyncio.TimeoutError) else mcpclient.describe(exc)
            return ToolOutcome(error=f"{where} is unavailable: {reason}")
        try:
            result = await session.call_tool(mcp.tool, args, read_timeout_seconds=mcp.server.timeout_seconds)
        except MCPError as exc:  # the server answered with an error (or the SDK for it: timeout, connection closed)
            if exc.code == CONNECTION_CLOSED:
                await self._drop(mcp, held)
            return ToolOutcome(error=f"{where}: {exc.message}")
        except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - a broken connection: reconnect next time
            error = mcpclient.first_error(exc)
            await self._drop(mcp, held)
            if isinstance(error, TimeoutError):
                return ToolOutcome(error=f"{where} did not answer within {mcp.server.timeout_seconds:g} s")
            return ToolOutcome(error=f"{where}: {mcpclient.describe(exc)}")
        text = mcpclient.result_text(result)
        return ToolOutcome(error=text or "the tool reported an error") if result.is_error else ToolOutcome(result=text)

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
