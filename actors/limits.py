"""What one LLM reply may make the run do, within the operator's limits (RunSpec.caps, from its settings).

Calls past a limit are not run: each gets a tool error naming the limit, the LLM reads it and the run goes on
(it may ask again, for fewer). In order of the reply:
  1. at most `tool_calls_per_reply` calls run (KUBECHAIN_MAX_TOOL_CALLS_PER_REPLY);
  2. of those, at most `child_runs_per_turn` delegate calls start a child run (KUBECHAIN_MAX_CHILD_RUNS_PER_TURN);
  3. a ray tool that reserves more than the operator allows (KUBECHAIN_RAY_TOOL_*) is not started.
A tool result that would take the run's journal past `journal_bytes` (KUBECHAIN_MAX_JOURNAL_BYTES) is not kept:
the call is a tool error saying so (`kept`).
"""
from __future__ import annotations

from kubechain.api.runspec import ResolvedTool, RunCaps
from kubechain.api.v1alpha1 import TaskRunStatus, ToolCallRecord
from kubechain.core.limits import ray_tool_problem

from .tools.executor import ToolOutcome


def refusals(records: list[ToolCallRecord], tools: dict[str, ResolvedTool],
             caps: RunCaps) -> list[tuple[ToolCallRecord, str]]:
    """The calls of one reply that must not run, each with its tool error."""
    limit, out = caps.tool_calls_per_reply, []
    for record in (r for r in records[limit:] if not r.state.finished):
        out.append((record, f"not run: the reply asked for {len(records)} tool calls and at most {limit} run per "
                            "reply (KUBECHAIN_MAX_TOOL_CALLS_PER_REPLY); ask for the rest in a later reply"))
    delegates = 0
    for record in records[:limit]:
        tool = tools.get(record.tool)
        if tool is None or record.state.finished:
            continue
        if tool.execution.delegate is not None:
            delegates += 1
            if delegates > caps.child_runs_per_turn:
                out.append((record, f"not run: at most {caps.child_runs_per_turn} delegate calls of one reply start "
                                    "a child run (KUBECHAIN_MAX_CHILD_RUNS_PER_TURN); ask for the rest in a later "
                                    "reply"))
        elif tool.execution.ray is not None and (problem := ray_tool_problem(tool.execution.ray, caps.ray)):
            out.append((record, f"not run: ray tool {record.tool!r}: {problem}"))
    return out


def journal_bytes(status: TaskRunStatus) -> int:
    """What the run's journal holds (about: characters of the texts it keeps), sealed chunks included."""
    calls = sum(len(r.arguments) + len(r.result or "") + len(r.error or "") for r in status.tool_call_history)
    messages = sum(len(m.content or "") + sum(len(c.function.arguments) for c in m.tool_calls or ())
                   for m in status.context_window)
    return status.sealed_context.bytes + calls + messages


def kept(outcome: ToolOutcome, status: TaskRunStatus, limit: int) -> ToolOutcome:
    """The outcome to journal: as it is, or a tool error if keeping it would pass the run's journal limit."""
    size = len(outcome.result or "") + len(outcome.error or "")
    used = journal_bytes(status)
    if used + size <= limit:
        return outcome
    return ToolOutcome(error=f"the tool's result ({size} characters) was not kept: the run's journal holds {used} "
                             f"bytes and keeps at most {limit} (KUBECHAIN_MAX_JOURNAL_BYTES)")
