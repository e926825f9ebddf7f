"""Talking to MCP servers with the official `mcp` SDK (2.x): used by the operator (tool discovery) and by the
TaskRun actors (tool calls). Connection specs come from the API models; Secret values come in resolved.

Imported lazily by actors (only a run that calls an MCP tool pays for the SDK).
"""
from __future__ import annotations

import json
import tempfile
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

from kubechain.api.v1alpha1 import MCPServer, MCPServerStatus, MCPToolInfo
from kubechain.api.v1alpha1.common import now_rfc3339
from kubechain.api.v1alpha1.mcp import MCPToolAnnotations
from kubechain.core.naming import mcp_tool_name

SecretLookup = Callable[[str, str], str]  # (Secret name, key) -> value


class MCPConnectError(Exception):
    """The server could not be started or reached, or did not complete the MCP handshake."""


def _values(items: Iterable[Any], secret: SecretLookup) -> dict[str, str]:
    """EnvVar/HTTPHeader lists as a dict, Secret references replaced by their values."""
    return {i.name: (secret(i.value_from.secret_key_ref.name, i.value_from.secret_key_ref.key)
                     if i.value_from is not None else i.value) for i in items}


def first_error(exc: BaseException) -> BaseException:
    """The first leaf of (nested) exception groups: the SDK's task groups wrap the real cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    exc = first_error(exc)
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MCPConnectError) else f"{type(exc).__name__}: {text}"


@asynccontextmanager
async def connect(server: MCPServer, secret: SecretLookup) -> AsyncIterator[Any]:
    """An initialized `mcp.ClientSession` to `server`; the process or HTTP session ends with the context.

    Starting and the handshake are bounded by the server's timeoutSeconds. Failures before the session is
    yielded raise MCPConnectError with a message for a human (a stdio server's last stderr lines included).
    """
    import anyio
    from mcp.client.session import ClientSession

    async with _transport(server, secret) as (streams, diagnosis):
        async with ClientSession(streams[0], streams[1], read_timeout_seconds=server.timeout_seconds) as session:
            try:
                with anyio.fail_after(server.timeout_seconds):
                    await session.initialize()
            except BaseException as exc:  # noqa: BLE001 - turned into a readable error, cancellation excepted
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                cause = ("no answer to the MCP handshake within "
                         f"{server.timeout_seconds:g} s" if isinstance(first_error(exc), TimeoutError)
                         else f"MCP handshake failed: {describe(exc)}")
                raise MCPConnectError(f"{cause}{diagnosis()}") from None
            yield session


def _stderr_tail(stderr: Any) -> str:
    try:
        stderr.flush()
        stderr.seek(0)
        lines = [line.strip() for line in stderr.read()[-4000:].splitlines() if line.strip()]
    except (OSError, ValueError):
        return ""
    return f" (stderr: {' | '.join(lines[-3:])[:500]})" if lines else ""


@asynccontextmanager
async def _transport(server: MCPServer, secret: SecretLookup) -> AsyncIterator[tuple[Any, Any]]:
    if server.stdio is not None:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=server.stdio.command, args=server.stdio.args,
                                       env=_values(server.stdio.env, secret))
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as stderr:
            async with AsyncExitStack() as stack:
                try:
                    streams = await stack.enter_async_context(stdio_client(params, errlog=stderr))
                except OSError as exc:
                    raise MCPConnectError(f"cannot start {server.stdio.command!r}: {exc.strerror or exc}") from None
                yield streams, lambda: _stderr_tail(stderr)
        return
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    statuses: list[str] = []  # the SDK reports any HTTP error as "Server returned an error response": keep the code

    async def note(response: Any) -> None:
        if response.status_code >= 400:
            statuses.append(f"HTTP {response.status_code} {response.reason_phrase}".strip())

    async with create_mcp_http_client(headers=_values(server.http.headers, secret)) as http:
        http.event_hooks["response"].append(note)
        async with streamable_http_client(server.http.url, http_client=http) as streams:
            yield streams, lambda: f" ({statuses[-1]} from {server.http.url})" if statuses else ""


async def list_tools(session: Any) -> list[Any]:
    """Every tool the server offers (all pages)."""
    from mcp_types import PaginatedRequestParams

    tools, cursor = [], None
    while True:
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def schema_problem(schema: Any) -> str | None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "its input schema is not of type object"
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"its input schema is invalid: {exc.message}"
    return None


def server_status(server: MCPServer, tools: list[Any], server_info: str = "") -> MCPServerStatus:
    """What a successful discovery writes: the tools the LLM can use (those with a usable schema), by LLM name."""
    infos, left_out = [], []
    for tool in tools:
        if problem := schema_problem(tool.input_schema):
            left_out.append(f"{tool.name} ({problem})")
            continue
        hints = tool.annotations
        infos.append(MCPToolInfo(
            name=tool.name, llm_name=mcp_tool_name(server.name, tool.name), description=tool.description or "",
            input_schema=tool.input_schema,
            annotations=MCPToolAnnotations() if hints is None else MCPToolAnnotations(
                read_only_hint=hints.read_only_hint, idempotent_hint=hints.idempotent_hint,
                destructive_hint=hints.destructive_hint, open_world_hint=hints.open_world_hint)))
    message = f"{len(infos)} tools" + (f"; left out: {', '.join(left_out)}" if left_out else "")
    return MCPServerStatus(name=server.name, ready=True, message=message, config_hash=server.config_hash(),
                           server_info=server_info, last_discovery_time=now_rfc3339(), tools=infos)


def failed_status(server: MCPServer, error: str) -> MCPServerStatus:
    return MCPServerStatus(name=server.name, ready=False, message=error[:1000], config_hash=server.config_hash(),
                           last_discovery_time=now_rfc3339())


async def discover(server: MCPServer, secret: SecretLookup) -> MCPServerStatus:
    """Connect, list the tools, disconnect: the server's status entry (a failure is an entry too, never raised)."""
    import anyio

    try:
        with anyio.fail_after(server.timeout_seconds * 2):  # connect + list; connect() bounds its own part
            async with connect(server, secret) as session:
                info = session.server_info
                tools = await list_tools(session)
        label = f"{info.name} {info.version}".strip() if info else ""
        return server_status(server, tools, label)
    except Exception as exc:  # noqa: BLE001 - every failure is the server's status
        error = first_error(exc)
        if isinstance(error, TimeoutError):
            return failed_status(server, f"no answer within {server.timeout_seconds:g} s")
        return failed_status(server, describe(exc))


def result_text(result: Any) -> str:
    """A CallToolResult as the text the LLM reads: text contents joined; other contents described."""
    parts = []
    for item in result.content or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind == "resource" and getattr(item.resource, "text", None) is not None:
            parts.append(item.resource.text)
        elif kind == "resource":
            parts.append(f"[resource {item.resource.uri} ({item.resource.mime_type or 'binary'})]")
        elif kind == "resource_link":
            parts.append(f"[resource link {item.uri}: {item.name}]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {item.mime_type}, {len(item.data) * 3 // 4} bytes]")
        else:
            parts.append(f"[{kind or type(item).__name__} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    return "\n".join(parts)
