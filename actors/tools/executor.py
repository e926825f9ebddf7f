"""ToolExecutor: runs the tool calls an LLM asks for. Every failure becomes a tool error for the LLM.

Container and delegate calls never get here: they wait (journaled Waiting) while the operator runs them as a
Job or a child TaskRun. Arguments were checked against the tool's schema before (actors/tools/arguments.py).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.runspec import ResolvedTool, secret_key
from kubechain.api.v1alpha1.tool import HTTPExecution, RayExecution
from kubechain.core.codetools import defined_in, execution_problem, function_rule

from .arguments import parse_arguments
from .builtins import BUILTINS, ToolError
from .offload import OverTime, off_loop

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
    """Runs builtins in the actor's process (off its event loop, within `time_limit` seconds), http calls from it,
    and ray tools as Ray tasks it awaits."""

    def __init__(self, tools: list[ResolvedTool], secrets: dict[str, Any] | None = None,
                 code_tools: CodeToolPolicy | None = None, time_limit: float = 10):
        """`code_tools`: the admin's rules for the run's namespace (RunSpec.code_tools; None: no code tool runs);
        `time_limit`: seconds a builtin or an argument check may take (RunSpec.local_tool_timeout_seconds)."""
        self._tools = {t.name: t for t in tools}
        self._secrets = secrets or {}
        self._code_tools = code_tools or CodeToolPolicy()
        self._time_limit = time_limit
        self._http: Any = None
        self._mcp: Any = None  # actors/tools/mcp.py MCPSessions, at the first MCP call

    async def execute(self, name: str, arguments: str, call_id: str, idempotency_key: str) -> ToolOutcome:
        tool = self._tools.get(name)
        if tool is None:
            return ToolOutcome(error=f"unknown tool {name!r}; available: {', '.join(sorted(self._tools)) or 'none'}")
        args, error = parse_arguments(arguments)
        if error is not None:
            return ToolOutcome(error=error)
        execution = tool.execution
        if refused := execution_problem(self._code_tools, execution):  # before anything starts
            return ToolOutcome(error=refused)
        if execution.builtin is not None:
            try:
                return await off_loop(self._time_limit, f"builtin {execution.builtin.name}", _builtin,
                                      execution.builtin.name, args)
            except OverTime as exc:
                return ToolOutcome(error=str(exc))
        if execution.http is not None:
            return await self._post(execution.http, args, idempotency_key)
        if execution.ray is not None:
            rule = function_rule(self._code_tools.ray_functions, execution.ray.function) or ""
            return await _ray_task(name, execution.ray, args, defined_in(rule))
        if execution.mcp is not None:  # resolved from a ToolSet's MCP server (api/runspec.py)
            from .mcp import MCPSessions  # the SDK only for runs that call an MCP tool

            if self._mcp is None:
                self._mcp = MCPSessions(self._secret, self._code_tools)
            return await self._mcp.call(execution.mcp, args)
        return ToolOutcome(error=f"{execution.kind} tools do not run in the actor")

    async def aclose(self) -> None:
        """Close the HTTP and MCP sessions (the process may serve another run after this one)."""
        http, mcp, self._http, self._mcp = self._http, self._mcp, None, None
        if http is not None:
            await http.close()
        if mcp is not None:
            await mcp.aclose()

    def _secret(self, name: str, key: str) -> str:
        value = self._secrets.get(secret_key(name, key))
        return value.get_secret_value() if value is not None else ""

    async def _post(self, http: HTTPExecution, args: dict[str, Any], idempotency_key: str) -> ToolOutcome:
        import aiohttp

        from .http import post  # the body read to its limit, no redirects (see there)

        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {h.name: (self._secret(h.value_from.secret_key_ref.name, h.value_from.secret_key_ref.key)
                            if h.value_from else h.value) for h in http.headers}
        headers["Idempotency-Key"] = idempotency_key
        return await post(self._http, http, args, headers)


def _builtin(name: str, args: dict[str, Any]) -> ToolOutcome:
    try:
        return ToolOutcome(result=BUILTINS[name](**args))
    except ToolError as exc:
        return ToolOutcome(error=str(exc))
    except TypeError as exc:  # wrong or missing argument names
        return ToolOutcome(error=f"bad arguments for {name}: {exc}")
    except Exception as exc:  # whatever the LLM's input provokes is the LLM's to read, never a crash
        return ToolOutcome(error=f"{name} failed: {type(exc).__name__}: {exc}")


def call_function(path: str, args: dict[str, Any], defined_in: str | None = None) -> str:
    """Runs in the Ray task: import `module:callable`, call it with the arguments, the result as text.
    `defined_in`: the callable must be defined in that module (allowed by a `module:*` rule)."""
    import importlib

    module, _, attribute = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    if defined_in is not None and getattr(target, "__module__", None) != defined_in:
        raise PermissionError(f"{path} is not defined in {defined_in} (KUBECHAIN_RAY_FUNCTIONS allows "
                              f"{defined_in}:*, not what it imports)")
    result = target(**args)
    return result if isinstance(result, str) else json.dumps(result, default=str)


async def _ray_task(name: str, ray_tool: RayExecution, args: dict[str, Any], defined_in: str | None) -> ToolOutcome:
    import ray

    options: dict[str, Any] = {"num_cpus": ray_tool.num_cpus, "num_gpus": ray_tool.num_gpus, "name": f"tool:{name}",
                               "max_retries": 0}  # a crashed tool is reported, not silently run again
    if ray_tool.memory is not None:
        options["memory"] = ray_tool.memory
    if ray_tool.resources:
        options["resources"] = ray_tool.resources
    if ray_tool.runtime_env:
        options["runtime_env"] = ray_tool.runtime_env
    ref = ray.remote(call_function).options(**options).remote(ray_tool.function, args, defined_in)
    try:
        return ToolOutcome(result=await asyncio.wait_for(ref, ray_tool.timeout_seconds))
    except TimeoutError:
        ray.cancel(ref, force=True)
        return ToolOutcome(error=f"the Ray task did not finish within {ray_tool.timeout_seconds:g} s; cancelled")
    except ray.exceptions.RayTaskError as exc:  # the callable raised: its own error, not Ray's traceback
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        return ToolOutcome(error=f"{type(cause).__name__}: {cause}"[:2000])
    except ray.exceptions.RayError as exc:
        return ToolOutcome(error=f"{type(exc).__name__}: {exc}"[:2000])
