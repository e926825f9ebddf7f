"""The operator's limits: per reply (tool calls, child runs), per tree, journal bytes, priority, Ray tool resources.
Each refusal names its setting; what is per reply is a tool error and the run goes on."""
import asyncio

import pytest

from kubechain.api.codetools import CodeToolPolicy

from actors.limits import journal_bytes, kept, refusals
from actors.loop import AgentLoop
from actors.tools.executor import LocalToolExecutor, ToolOutcome
from kubechain.api.runspec import RayToolLimits, ResolvedTool, RunCaps
from kubechain.api.v1alpha1 import CallState, Phase, TaskRunStatus, ToolCallRecord, ToolExecution, WaitingFor
from kubechain.core import admission
from kubechain.core.lifecycle import ChildOutcome, enter
from kubechain.core.limits import max_priority
from kubechain.core.observation import Observed, Trigger
from kubechain.core.reconciler import reconcile

from .test_loop import NOW, SPEC, MemoryStore, ScriptedLLM, assistant, call
from .test_reconciler import REF, SPEC as RUN_SPEC, waiting


# A namespace the admin opted in to code tools, `m:f` allowed: only the resource limits are left to refuse.
ALLOWED = CodeToolPolicy(namespace="ns", namespace_allowed=True, ray_functions=["m:f"])


def tool(name, execution):
    return ResolvedTool(name=name, description=name, parameters={"type": "object"},
                        execution=ToolExecution.model_validate(execution))


TOOLS = {t.name: t for t in [tool("calc", {"builtin": {"name": "calculator"}}),
                             tool("ask", {"delegate": {"agentRef": {"name": "helper"}}}),
                             tool("gpu", {"ray": {"function": "m:f", "numGpus": 2}})]}


def records(*names):
    return [ToolCallRecord(id=f"c{i}", step=1, tool=name, arguments="{}") for i, name in enumerate(names)]


def test_calls_past_the_per_reply_limit_and_delegations_past_the_per_turn_limit_are_refused():
    caps = RunCaps(tool_calls_per_reply=4, child_runs_per_turn=2)
    refused = dict((r.id, why) for r, why in refusals(records("ask", "ask", "ask", "calc", "calc", "ask"), TOOLS, caps))
    assert sorted(refused) == ["c2", "c4", "c5"]
    assert refused["c5"].startswith("not run: the reply asked for 6 tool calls and at most 4 run per reply "
                                    "(KUBECHAIN_MAX_TOOL_CALLS_PER_REPLY)")
    assert refused["c2"].startswith("not run: at most 2 delegate calls of one reply start a child run "
                                    "(KUBECHAIN_MAX_CHILD_RUNS_PER_TURN)")
    [(gpu, why)] = refusals(records("gpu"), TOOLS, caps)
    assert why == "not run: ray tool 'gpu': numGpus 2 is over the limit of 1 (KUBECHAIN_RAY_TOOL_MAX_GPUS)"


def test_200_calls_in_one_reply_run_64_and_the_run_goes_on():
    llm = ScriptedLLM(assistant(calls=[call(f"c{i}", "calculator", '{"expression": "1+1"}') for i in range(200)]),
                      assistant("done"))
    final = asyncio.run(AgentLoop(SPEC, llm, LocalToolExecutor(SPEC.tools), MemoryStore()).run(
        enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))
    states = [r.state for r in final.tool_call_history]
    assert final.phase is Phase.COMPLETED and states.count(CallState.SUCCEEDED) == 64
    assert states.count(CallState.FAILED) == 136 and len(final.tool_call_history) == 200
    answered = [m["tool_call_id"] for m in llm.calls[1][0] if m["role"] == "tool"]
    assert sorted(answered) == sorted(f"c{i}" for i in range(200))  # every call has its result (or error)


def test_a_result_past_the_journal_limit_is_not_kept():
    status = TaskRunStatus(tool_call_history=records("calc"))
    status.sealed_context.bytes = 900
    assert journal_bytes(status) == 902
    small = ToolOutcome(result="x" * 98)
    assert kept(small, status, 1000) is small
    big = kept(ToolOutcome(result="x" * 99), status, 1000)
    assert big.result is None and big.error == ("the tool's result (99 characters) was not kept: the run's journal "
                                                "holds 902 bytes and keeps at most 1000 (KUBECHAIN_MAX_JOURNAL_BYTES)")


@pytest.mark.parametrize("ray, problem", [
    ({"numCpus": 0}, "numCpus 0 is under the least a ray tool may reserve, 0.1 (KUBECHAIN_RAY_TOOL_MIN_CPUS)"),
    ({"numCpus": 8}, "numCpus 8 is over the limit of 4 (KUBECHAIN_RAY_TOOL_MAX_CPUS)"),
    ({"memory": 10 ** 12}, "memory 1000000000000 is over the limit of 8589934592 bytes (KUBECHAIN_RAY_TOOL_MAX_MEMORY)"),
    ({"resources": {"TPU": 1}}, "custom resource 'TPU' is not one ray tools may reserve (KUBECHAIN_RAY_TOOL_RESOURCES: "
                                "none)"),
    ({"numCpus": 0.5}, None),
])
def test_ray_tool_resources_are_refused_at_admission_over_the_operators_limits(ray, problem):
    spec = {"description": "d", "execution": {"ray": {"function": "m:f", **ray}}}
    problems = admission.tool(spec, ALLOWED, RayToolLimits())
    assert (problems[0].startswith(problem) if problem else problems == [])
    inline = {"tools": [{"name": "t", **spec}]}
    assert admission.toolset(inline, ALLOWED, RayToolLimits()) == ([f"tool 't': {problems[0]}"] if problem else [])
    assert admission.tool({**spec, "execution": {"ray": {"function": "m:f", "resources": {"TPU": 1}}}},
                          ALLOWED, RayToolLimits(resources={"TPU": 2})) == []


def test_priority_over_the_namespaces_maximum_is_refused_on_create_and_when_raised():
    run = lambda p: {"spec": {"taskRef": {"name": "t"}, "priority": p}}  # noqa: E731
    assert admission.priority(run(0), None, "team", 0, False) == []
    assert admission.priority(run(10), None, "team", 0, False) == [
        "spec.priority 10 is over the highest priority namespace 'team' may use, 0 (KUBECHAIN_MAX_PRIORITY; a "
        "cluster admin may raise it with the Namespace annotation kubechain.dev/max-priority)"]
    assert "the annotation kubechain.dev/max-priority of namespace 'team'" in admission.priority(
        run(10), None, "team", 5, True)[0]
    assert admission.priority(run(10), None, "ops", 10, True) == []
    assert admission.priority(run(10), run(10), "team", 0, False) == []  # unchanged: runs admitted before still work
    assert admission.priority(run(11), run(10), "team", 0, False) != []
    assert (max_priority("7", 0), max_priority("junk", 3), max_priority(None, 3)) == (7, 3, 3)


def test_a_delegation_past_the_runs_a_tree_may_hold_is_a_tool_error_and_creates_no_child():
    children = [ToolCallRecord(id=f"c{i}", step=1, tool="ask", arguments='{"message": "m"}', state=CallState.WAITING,
                               waiting_for=WaitingFor.CHILD_RUN, child_run=f"run-{i}", delegated_to="helper")
                for i in range(3)]
    seen = Observed(Trigger.EVENT, REF, waiting(Phase.DELEGATING, *children), RUN_SPEC, tree_runs=3, max_tree_runs=4)
    decision = reconcile(seen, NOW)
    created = [e.body["metadata"]["name"] for e in decision.effects if type(e).__name__ == "CreateChild"]
    assert created == ["run-0"] and decision.status.phase is Phase.DELEGATING
    ended = reconcile(Observed(Trigger.EVENT, REF, seen.status, RUN_SPEC, tree_runs=4, max_tree_runs=4,
                               children={"run-0": ChildOutcome(Phase.COMPLETED, output="ok")}), NOW)
    assert ended.status.phase is Phase.RUNNING  # the refused calls have their answer: the run goes on
    built = [e.body for e in reconcile(seen, NOW).effects if type(e).__name__ == "CreateChild"][0]
    assert built["metadata"]["labels"]["kubechain.dev/root-uid"] == REF.uid
