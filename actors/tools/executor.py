"""ToolExecutor: runs the tool calls an LLM asks for. Every failure becomes a tool error for the LLM."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from kubechain.api.runspec import ResolvedTool

from .builtins import BUILTINS, ToolError


@dataclass(frozen=True)
class ToolOutcome:
    result: str | None = None
    error: str | None = None

    @property
    def content(self) -> str:
        """What the LLM sees in the tool message."""
        return self.result if self.error is None else f"Error: {self.error}"


class ToolExecutor(Protocol):
    async def execute(self, name: str, arguments: str, call_id: str) -> ToolOutcome: ...


class LocalToolExecutor:
    """Runs builtins in the actor's process; container and delegate tools come in later releases."""

    def __init__(self, tools: list[ResolvedTool]):
        self._tools = {t.name: t for t in tools}

    async def execute(self, name: str, arguments: str, call_id: str) -> ToolOutcome:
        tool = self._tools.get(name)
        if tool is None:
            return ToolOutcome(error=f"unknown tool {name!r}; available: {', '.join(sorted(self._tools)) or 'none'}")
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return ToolOutcome(error=f"arguments are not valid JSON ({exc.msg} at position {exc.pos})")
        if not isinstance(args, dict):
            return ToolOutcome(error="arguments must be a JSON object")
        kind = tool.execution.kind
        if kind != "builtin":
            return ToolOutcome(error=f"{kind} tools are not supported yet")
        try:
            return ToolOutcome(result=BUILTINS[tool.execution.builtin.name](**args))
        except ToolError as exc:
            return ToolOutcome(error=str(exc))
        except TypeError as exc:  # wrong or missing argument names
            return ToolOutcome(error=f"bad arguments for {name}: {exc}")
