"""What the validating webhook refuses, as pure functions: each returns the problems (empty: admit).

The OpenAPI schema checks shapes; these are the rules across fields and objects it cannot express.
References are LocalObjectReferences (a name, no namespace), so no object can point into another
namespace in the first place.
"""
from __future__ import annotations

from typing import Any, Callable

from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.runspec import RayToolLimits
from kubechain.api.v1alpha1 import (AgentSpec, HumanResponse, LLMSpec, TaskRunSpec, TaskRunStatus, TaskScheduleSpec,
                                    ToolSetSpec, ToolSpec)
from kubechain.core import codetools
from kubechain.core.fork import ForkSource, source_problem
from kubechain.core.limits import priority_problem, tool_limits_problem
from kubechain.core.naming import llm_tool_name
from kubechain.core.resolve import Catalog, parse, tool_problem
from kubechain.core.lifecycle import response_problems


def llm(spec: dict[str, Any]) -> list[str]:
    """What the schema cannot say: e.g. extraBody may not set the fields the run sends itself."""
    return [error] if (error := parse(LLMSpec, spec)[1]) else []


def tool(spec: dict[str, Any], policy: CodeToolPolicy | None = None, ray: RayToolLimits = RayToolLimits()) -> list[str]:
    """`policy`: the code-tool rules of the Tool's namespace (None: no code tool may run); `ray`: what ray tools
    may reserve (the operator's settings)."""
    parsed, error = parse(ToolSpec, spec)
    if error:
        return [error]
    problems = [problem] if (problem := tool_problem(parsed) or tool_limits_problem(parsed, ray)) else []
    return problems + codetools.tool_problems(parsed, policy or CodeToolPolicy())


def toolset(spec: dict[str, Any], policy: CodeToolPolicy | None = None, ray: RayToolLimits = RayToolLimits()) -> list[str]:
    """`policy` and `ray`: as for tool()."""
    parsed, error = parse(ToolSetSpec, spec)
    if error:
        return [error]
    problems = [f"tool {t.name!r}: {p}" for t in parsed.tools if (p := tool_problem(t) or tool_limits_problem(t, ray))]
    problems += codetools.toolset_problems(parsed, policy or CodeToolPolicy())
    names = [t.name for t in parsed.tools] + [llm_tool_name(r.name) for r in parsed.tool_refs]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"tool names must be unique within a ToolSet: {', '.join(dupes)}")
    return problems


def _tools_of(namespace: str, toolset_name: str, catalog: Catalog) -> list[tuple[str, dict[str, Any]]]:
    """(name shown to the LLM, tool spec) of a ToolSet that exists, else nothing."""
    found = catalog.get("ToolSet", namespace, toolset_name)
    if found is None:
        return []
    spec = found["spec"]
    tools = [(t.get("name", ""), t) for t in spec.get("tools", [])]
    for ref in spec.get("toolRefs", []):
        if (target := catalog.get("Tool", namespace, ref.get("name", ""))) is not None:
            tools.append((llm_tool_name(ref["name"]), target["spec"]))
    return tools


def _delegates(namespace: str, agent_spec: dict[str, Any], catalog: Catalog) -> list[str]:
    return [t["execution"]["delegate"]["agentRef"]["name"]
            for ref in agent_spec.get("toolsetRefs", []) for _, t in _tools_of(namespace, ref.get("name", ""), catalog)
            if (t.get("execution") or {}).get("delegate")]


def delegation_cycle(namespace: str, name: str, spec: dict[str, Any], catalog: Catalog) -> list[str] | None:
    """A chain of delegate tools that leads from agent `name` (with `spec`) back to it, if any."""
    def walk(agent: str, path: list[str]) -> list[str] | None:
        agent_spec = spec if agent == name else (catalog.get("Agent", namespace, agent) or {}).get("spec")
        for target in _delegates(namespace, agent_spec or {}, catalog):
            if target == name:
                return [*path, target]
            if target not in path and (found := walk(target, [*path, target])):
                return found
        return None
    return walk(name, [name])


def agent(namespace: str, name: str, spec: dict[str, Any], catalog: Catalog) -> list[str]:
    _, error = parse(AgentSpec, spec)
    if error:
        return [error]
    problems = []
    owners: dict[str, list[str]] = {}
    for ref in spec.get("toolsetRefs", []):
        for tool_name, _ in _tools_of(namespace, ref.get("name", ""), catalog):
            owners.setdefault(tool_name, []).append(ref["name"])
    for tool_name, sets in sorted(owners.items()):
        if len(sets) > 1:
            problems.append(f"tool {tool_name!r} is offered by more than one ToolSet: {', '.join(sets)}")
    if cycle := delegation_cycle(namespace, name, spec, catalog):
        problems.append(f"delegate tools form a cycle: {' -> '.join(cycle)}")
    return problems


def task_update(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    launched = bool((old.get("status") or {}).get("taskRunName"))
    if launched and old["spec"].get("agentRef") != new["spec"].get("agentRef"):
        return ["spec.agentRef cannot change once the Task launched its TaskRun: create a new Task"]
    return []


def priority(new: dict[str, Any], old: dict[str, Any] | None, namespace: str, maximum: int,
             annotated: bool) -> list[str]:
    """A Task's or TaskRun's priority, when it is set or raised: at most its namespace's maximum (limits.py)."""
    value = int((new.get("spec") or {}).get("priority") or 0)
    if old is not None and value <= int((old.get("spec") or {}).get("priority") or 0):
        return []  # unchanged or lowered: a run admitted before the maximum fell keeps working
    return [problem] if (problem := priority_problem(value, namespace, maximum, annotated)) else []


def schedule(new: dict[str, Any], old: dict[str, Any] | None, namespace: str, maximum: int,
             annotated: bool) -> list[str]:
    """A TaskSchedule: its cron expression and zone (the model says what is wrong), and its runs' priority, as a
    Task's (the runs it starts would be refused later, one per due time)."""
    _, error = parse(TaskScheduleSpec, new.get("spec") or {})
    if error:
        return [error]

    def template(obj: dict[str, Any] | None) -> dict[str, Any] | None:
        return {"spec": (obj.get("spec") or {}).get("runTemplate") or {}} if obj is not None else None

    problems = priority(template(new) or {}, template(old), namespace, maximum, annotated)
    return [p.replace("spec.priority", "spec.runTemplate.priority", 1) for p in problems]


def quota(new: dict[str, Any], operation: str, spent: list[str]) -> list[str]:
    """A new Task, or a TaskRun a user creates, in a namespace whose RunQuota is spent (`spent`: the quotas'
    messages) is refused, saying so. Runs the operator creates (a Task's, a schedule's, a delegation's: they have an
    owner) are not: they queue, as every run does while the quota is spent, which is what enforces it."""
    owned = bool((new.get("metadata") or {}).get("ownerReferences"))
    return [f"refused: {why}" for why in spent] if operation == "CREATE" and spent and not owned else []


IMMUTABLE_TASKRUN_FIELDS = ("taskRef", "agentRef", "userInput", "parent", "forkOf")


def taskrun(new: dict[str, Any], old: dict[str, Any] | None = None, sources: Callable[[str], ForkSource | None]
            = lambda name: None) -> list[str]:
    """`sources`: a TaskRun of the namespace by name as a fork source (the operator's index), for spec.forkOf."""
    spec, error = parse(TaskRunSpec, new.get("spec") or {})
    if error:
        return [error]
    if old is None:
        problems = ["spec.responses must be empty when a TaskRun is created"] if new["spec"].get("responses") else []
        if spec.fork_of is not None and (problem := source_problem(spec.fork_of, sources(spec.fork_of.name))):
            problems.append(problem)
        return problems
    problems = [f"spec.{f} cannot change" for f in IMMUTABLE_TASKRUN_FIELDS
                if old["spec"].get(f) != new["spec"].get(f)]
    if old["spec"].get("cancel") and not new["spec"].get("cancel"):
        problems.append("spec.cancel cannot be unset: a cancelled run stays cancelled")
    before, after = old["spec"].get("responses") or {}, new["spec"].get("responses") or {}
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    if changed:
        status = TaskRunStatus.model_validate(old.get("status") or {})
        replies = {k: HumanResponse.model_validate(v) for k, v in changed.items()}
        problems += response_problems(status, replies, sealed=status.sealed_context.tool_calls > 0)
    return problems + [f"{k}: a reply cannot be removed" for k in before if k not in after]
