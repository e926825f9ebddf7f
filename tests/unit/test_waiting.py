"""Calls that wait (ask_human, approval, delegation) in the loop, and the operator's pure decisions about them."""
import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from actors.loop import AgentLoop
from kubechain.api.runspec import CallInput, ResolvedTool
from kubechain.api.v1alpha1 import (CallState, HumanResponse, Phase, RunLimits, TaskRunStatus, ToolExecution,
                                    WaitingFor)
from kubechain.core.naming import child_taskrun_name
from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import SealedContext, TaskRunSpec
from kubechain.core.limits import with_retention
from kubechain.core.lifecycle import ChildOutcome, enter, gather_inputs, next_deadline, response_problems, stop_for
from kubechain.core.observation import Observed, Trigger
from kubechain.core.reconciler import reconcile

from .test_loop import SPEC, CountingExecutor, MemoryStore, ScriptedLLM, assistant, call

NOW = datetime.now(timezone.utc)
REF = TaskRunRef(namespace="ns", name="run", uid="u1")


def decide_waiting(status, responses=None, children=None, now=NOW):
    """The reconciler's answer to an event of a waiting run: (phase, reason of the last transition, message)."""
    spec = TaskRunSpec.model_validate({"taskRef": {"name": "t"}, "responses": responses or {}})
    decision = reconcile(Observed(Trigger.EVENT, REF, status, spec, children=children or {}), now)
    return decision.status.phase, decision.status.phase_history[-1].reason, decision.status.message


def tool(name, execution, **extra):
    return ResolvedTool(name=name, description=name, parameters={"type": "object"},
                        execution=ToolExecution.model_validate(execution), **extra)


WAITING_SPEC = SPEC.model_copy(update={"agent": "boss", "tools": [
    tool("ask", {"builtin": {"name": "ask_human"}}),
    tool("deploy", {"http": {"url": "http://deploy/"}}, requires_approval=True, approval_timeout_seconds=60),
    tool("research", {"delegate": {"agentRef": {"name": "researcher"}}}),
    tool("boss", {"delegate": {"agentRef": {"name": "boss"}}})]})


def key(call_id, step=1):
    """What a call of the first turn is keyed by (replies, inputs, child names): its idempotency key."""
    return f"{SPEC.taskrun.uid}/{step}/{call_id}"


def loop(spec, llm, store=None, tools=None):
    return AgentLoop(spec, llm, tools or CountingExecutor(), store or MemoryStore())


def first_turn(*calls):
    """Run a fresh loop whose first LLM reply makes `calls` (then answers): the status it stops in."""
    llm = ScriptedLLM(assistant(calls=list(calls)), assistant("done"))
    return asyncio.run(loop(WAITING_SPEC, llm).run(enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))


def test_ask_human_pauses_with_the_question_and_resumes_with_the_answer():
    paused = first_turn(call("c1", "ask", '{"question": "Which region?"}'))
    [record] = paused.tool_call_history
    assert paused.phase is Phase.PAUSED_FOR_USER_INPUT and paused.phase_history[-1].reason == "WaitingForInput"
    assert (record.state, record.waiting_for, record.question) == (CallState.WAITING, WaitingFor.ANSWER, "Which region?")

    answer = HumanResponse(answer="eu-west", by="ops")
    gathered = gather_inputs(paused, {key("c1"): answer}, {}, NOW)
    assert decide_waiting(paused, {key("c1"): answer}) == (Phase.RUNNING, "InputReceived", "resuming with 1 result(s)")
    resumed = enter(paused, Phase.RUNNING, "InputReceived", now=NOW)
    llm = ScriptedLLM(assistant("going to eu-west"))
    final = asyncio.run(loop(WAITING_SPEC.model_copy(update={"inputs": gathered.inputs}), llm).run(resumed))
    assert final.phase is Phase.COMPLETED and final.tool_call_history[0].result == "eu-west"
    assert final.tool_call_history[0].response == answer
    assert llm.calls[0][0][-1] == {"role": "tool", "tool_call_id": "c1", "content": "eu-west"}


@pytest.mark.parametrize("approved, ran, content", [(True, 1, "posted {}"), (False, 0, "Error: rejected by a human: too risky")])
def test_approval_runs_the_tool_or_hands_the_rejection_to_the_llm(approved, ran, content):
    paused = first_turn(call("c1", "deploy", "{}"))
    record = paused.tool_call_history[0]
    assert record.waiting_for is WaitingFor.APPROVAL and record.expires_at and "deploy({})" in record.question
    response = HumanResponse(approved=approved, reason="" if approved else "too risky")
    inputs = gather_inputs(paused, {key("c1"): response}, {}, NOW).inputs
    tools, llm = CountingExecutor(), ScriptedLLM(assistant("ok"))
    asyncio.run(loop(WAITING_SPEC.model_copy(update={"inputs": inputs}), llm, tools=tools)
                .run(enter(paused, Phase.RUNNING, "InputReceived", now=NOW)))
    assert len(tools.calls) == ran and llm.calls[0][0][-1]["content"] == content


def test_an_expired_approval_is_a_rejection():
    paused = first_turn(call("c1", "deploy", "{}"))
    expiry = datetime.fromisoformat(paused.tool_call_history[0].expires_at.replace("Z", "+00:00"))
    assert next_deadline(RunLimits(), paused) == expiry
    assert decide_waiting(paused, now=expiry - timedelta(seconds=1))[0] is Phase.PAUSED_FOR_USER_INPUT
    gathered = gather_inputs(paused, {}, {}, expiry)
    assert gathered.inputs[key("c1")].accepted is False and "deadline" in gathered.inputs[key("c1")].text


def test_delegation_waits_for_every_child_then_resumes_with_their_results():
    status = first_turn(call("a", "research", '{"message": "find x"}'), call("b", "research", '{"message": "find y"}'))
    assert status.phase is Phase.DELEGATING
    names = [r.child_run for r in status.tool_call_history]
    assert names == [child_taskrun_name("run", key("a")), child_taskrun_name("run", key("b"))] and names[0] != names[1]
    children = {names[0]: ChildOutcome(Phase.COMPLETED, output="x=1"), names[1]: ChildOutcome(Phase.RUNNING)}
    assert decide_waiting(status, children=children) == (
        Phase.DELEGATING, "Delegated", f"waiting for child TaskRun {names[1]} (Running)")
    children[names[1]] = ChildOutcome(Phase.FAILED, error="LLM down")
    gathered = gather_inputs(status, {}, children, NOW)
    assert decide_waiting(status, children=children)[:2] == (Phase.RUNNING, "ChildrenFinished")
    assert gathered.inputs[key("a")] == CallInput(accepted=True, text="x=1")
    assert not gathered.inputs[key("b")].accepted and "LLM down" in gathered.inputs[key("b")].text


def test_cycles_depth_and_bad_arguments_fail_the_call_not_the_run():
    status = first_turn(call("a", "boss", '{"message": "again"}'), call("b", "ask", '{}'))
    errors = [r.error for r in status.tool_call_history]
    assert errors[0] == "delegation cycle refused: boss -> boss"
    assert "'question'" in errors[1]
    deep = WAITING_SPEC.model_copy(update={"lineage": ["a1", "a2", "a3", "a4"]})
    llm = ScriptedLLM(assistant(calls=[call("c", "research", '{"message": "m"}')]), assistant("gave up"))
    final = asyncio.run(loop(deep, llm).run(enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))
    assert "depth limit (5)" in final.tool_call_history[0].error and final.phase is Phase.COMPLETED


def test_max_turns_fails_the_run():
    spec = WAITING_SPEC.model_copy(update={"max_turns": 2})
    llm = ScriptedLLM(*[assistant(calls=[call(f"c{i}", "calculator", '{"expression": "1"}')]) for i in range(3)])
    final = asyncio.run(loop(spec, llm).run(enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))
    assert final.phase is Phase.FAILED and final.phase_history[-1].reason == "MaxTurnsExceeded"
    assert len(llm.calls) == 2


def test_refused_responses():
    paused = first_turn(call("c1", "ask", '{"question": "q"}'), call("c2", "deploy", "{}"))
    assert response_problems(paused, {key("c1"): HumanResponse(answer="x"), key("c2"): HumanResponse(approved=False)}) == []
    problems = response_problems(paused, {"zz": HumanResponse(answer="x"), key("c2"): HumanResponse(answer="yes")})
    assert problems == [f"{key('c2')}: this call waits for `approved: true|false`", "zz: no such tool call in this run"]
    assert response_problems(paused, {"zz": HumanResponse(answer="x")}, sealed=True) == []
    # A reply under the LLM's bare call id is refused, naming the key to use (sealed or not).
    for sealed in (False, True):
        assert response_problems(paused, {"c1": HumanResponse(answer="x")}, sealed=sealed) == [
            f"c1: replies are keyed by the call's idempotencyKey, not the LLM's call id: use {key('c1')}"]
    done = paused.model_copy(deep=True)
    done.tool_call_history[0].state, done.tool_call_history[0].response = CallState.SUCCEEDED, HumanResponse(answer="x")
    assert response_problems(done, {key("c1"): HumanResponse(answer="x")}) == []
    assert "already answered" in response_problems(done, {key("c1"): HumanResponse(answer="other")})[0]


def test_stops_and_deadlines():
    running = enter(TaskRunStatus(), Phase.RUNNING, "Scheduled", now=NOW)
    start = datetime.fromisoformat(running.phase_history[0].time.replace("Z", "+00:00"))
    assert stop_for(RunLimits(), True, running, NOW).reason == "Cancelled"
    assert stop_for(RunLimits(timeout_seconds=10), False, running, start + timedelta(seconds=9)) is None
    assert stop_for(RunLimits(timeout_seconds=10), False, running, start + timedelta(seconds=10)).reason == "Timeout"
    done = enter(running, Phase.COMPLETED, "FinalAnswer", now=NOW)
    assert stop_for(RunLimits(), True, done, NOW) is None and next_deadline(RunLimits(), done) is None
    end = datetime.fromisoformat(done.phase_history[-1].time.replace("Z", "+00:00"))
    assert next_deadline(RunLimits(ttl_seconds_after_finished=30), done) == end + timedelta(seconds=30)
    assert next_deadline(RunLimits(ttl_seconds_after_finished=0), done) is None  # 0: kept
    sealed = done.model_copy(update={"sealed_context": SealedContext(chunks=2, messages=9, bytes=9000)})
    both = RunLimits(ttl_seconds_after_finished=30, context_retention_seconds=10)
    assert next_deadline(both, sealed) == end + timedelta(seconds=10)  # the chunks go first, then the run
    assert next_deadline(both, done) == end + timedelta(seconds=30)  # nothing sealed: nothing to drop


def test_the_operators_retention_defaults_fill_only_what_a_run_leaves_unset():
    spec = TaskRunSpec.model_validate({"taskRef": {"name": "t"}, "ttlSecondsAfterFinished": 0})
    filled = with_retention(spec, 604800, 3600)
    assert (filled.ttl_seconds_after_finished, filled.context_retention_seconds) == (0, 3600)
    assert with_retention(filled, 1, 1) is filled
