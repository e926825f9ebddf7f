"""ToolExecutor: runs the tool calls an LLM asks for. Every failure becomes a tool error for the LLM."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from kubechain.api.runspec import ResolvedTool
from kubechain.api.v1alpha1.tool import HTTPExecution

from .builtins import BUILTINS, ToolError

MAX_RESULT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ToolOutcome:
    result: str | None = None
    error: str | None = None

    @property
    def content(self) -> str:
        """What the LLM sees in the tool message."""
        return self.result if self.error is None else f"Error: {self.error}"


class ToolExecutor(Protocol):
    async def execute(self, name: str, arguments: str, call_id: str, idempotency_key: str) -> ToolOutcome: ...


class LocalToolExecutor:
    """Runs builtins in the actor's process and http tools from it; container and delegate come later."""

    def __init__(self, tools: list[ResolvedTool]):
        self._tools = {t.name: t for t in tools}
        self._http: Any = None

    async def execute(self, name: str, arguments: str, call_id: str, idempotency_key: str) -> ToolOutcome:
        tool = self._tools.get(name)
        if tool is None:
            return ToolOutcome(error=f"unknown tool {name!r}; available: {', '.join(sorted(self._tools)) or 'none'}")
        args, error = parse_arguments(arguments)
        if error is not None:
            return ToolOutcome(error=error)
        execution = tool.execution
        if execution.builtin is not None:
            return _builtin(execution.builtin.name, args)
        if execution.http is not None:
            return await self._post(execution.http, args, idempotency_key)
        return ToolOutcome(error=f"{execution.kind} tools are not supported yet")

    async def _post(self, http: HTTPExecution, args: dict[str, Any], idempotency_key: str) -> ToolOutcome:
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {h.name: h.value for h in http.headers} | {"Idempotency-Key": idempotency_key}
        try:
            async with self._http.post(http.url, json=args, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=http.timeout_seconds)) as response:
                body = (await response.content.read(MAX_RESULT_BYTES)).decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ToolOutcome(error=f"{type(exc).__name__}: {exc}")
        if response.ok:
            return ToolOutcome(result=body)
        return ToolOutcome(error=f"HTTP {response.status}: {body[:1024]}")


def parse_arguments(arguments: str) -> tuple[dict[str, Any], str | None]:
    """The LLM's arguments as a dict, or the error the LLM should read."""
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(args, dict):
        return {}, "arguments must be a JSON object"
    return args, None


def _builtin(name: str, args: dict[str, Any]) -> ToolOutcome:
    try:
        return ToolOutcome(result=BUILTINS[name](**args))
    except ToolError as exc:
        return ToolOutcome(error=str(exc))
    except TypeError as exc:  # wrong or missing argument names
        return ToolOutcome(error=f"bad arguments for {name}: {exc}")
    except Exception as exc:  # whatever the LLM's input provokes is the LLM's to read, never a crash
        return ToolOutcome(error=f"{name} failed: {type(exc).__name__}: {exc}")
