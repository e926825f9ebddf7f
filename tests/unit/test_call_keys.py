"""Keys that cannot collide: an LLM server that numbers its calls (`call_0`, `0`) reuses ids across steps, and
replies, inputs, child runs and Jobs are keyed by the run-unique call key (uid/step/call id) instead."""
import asyncio

from actors.loop import AgentLoop
from kubechain.api.v1alpha1 import (CallState, HumanResponse, Phase, TaskRunStatus, ToolCallRecord, WaitingFor)
from kubechain.clients.respond import Reply, response_patch
from kubechain.core.lifecycle import ChildOutcome, JobOutcome, enter, gather_inputs, response_problems

from .test_loop import NOW, CountingExecutor, MemoryStore, ScriptedLLM, assistant, call
from .test_waiting import WAITING_SPEC


def record(step, state, waiting_for=None, **extra):
    """Call "0" of step `step`, as a server that numbers calls per reply would name it."""
    return ToolCallRecord(id="0", step=step, tool="deploy", arguments="{}", state=state, waiting_for=waiting_for,
                          idempotency_key=f"u/{step}/0", **extra)


def test_a_later_call_with_a_reused_id_is_not_answered_by_the_earlier_reply():
    earlier = HumanResponse(approved=True, by="alice")
    status = TaskRunStatus(phase=Phase.PAUSED_FOR_USER_INPUT, tool_call_history=[
        record(1, CallState.SUCCEEDED, WaitingFor.APPROVAL, response=earlier),
        record(2, CallState.WAITING, WaitingFor.APPROVAL)])
    responses = {"u/1/0": earlier}
    gathered = gather_inputs(status, responses, {}, NOW)
    assert gathered.inputs == {} and gathered.missing == ["approval of call 0 (deploy)"]
    assert response_problems(status, responses) == []  # the earlier reply stays valid for its own call
    later = HumanResponse(approved=False, reason="not twice")
    assert gather_inputs(status, {**responses, "u/2/0": later}, {}, NOW).inputs["u/2/0"].accepted is False
    # The CLI and the console find the waiting call by the LLM's id, and write under its key.
    obj = {"metadata": {"name": "r"}, "spec": {"taskRef": {"name": "t"}, "responses": responses},
           "status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    reply = Reply(WaitingFor.APPROVAL, later)
    assert response_patch(obj, reply, "0")[0] == response_patch(obj, reply, "u/2/0")[0] == "u/2/0"
    assert response_patch(obj, reply)[1] == {"spec": {"responses": {"u/2/0": {"approved": False,
                                                                               "reason": "not twice"}}}}


def test_child_runs_and_jobs_of_reused_ids_are_told_apart():
    status = TaskRunStatus(phase=Phase.DELEGATING, tool_call_history=[
        record(1, CallState.SUCCEEDED, WaitingFor.CHILD_RUN, child_run="run-aaa"),
        record(2, CallState.WAITING, WaitingFor.CHILD_RUN, child_run="run-bbb"),
        record(2, CallState.WAITING, WaitingFor.JOB, job="run-tool-x").model_copy(
            update={"id": "1", "idempotency_key": "u/2/1"})])
    children = {"run-aaa": ChildOutcome(Phase.COMPLETED, output="old answer")}
    jobs = {"u/1/1": JobOutcome(True, True, "an older Job's result")}
    gathered = gather_inputs(status, {}, children, NOW, jobs)
    assert gathered.inputs == {} and len(gathered.missing) == 2


def test_the_loop_names_children_by_key_and_resumes_each_call_with_its_own_input():
    """Step 1 and step 2 both delegate with call id "0": two children, each result to its own call."""
    llm = ScriptedLLM(assistant(calls=[call("0", "research", '{"message": "a"}')]))
    first = asyncio.run(AgentLoop(WAITING_SPEC, llm, CountingExecutor(), MemoryStore()).run(
        enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))
    one = first.tool_call_history[0]
    inputs = gather_inputs(first, {}, {one.child_run: ChildOutcome(Phase.COMPLETED, output="A")}, NOW).inputs
    llm = ScriptedLLM(assistant(calls=[call("0", "research", '{"message": "b"}')]))
    second = asyncio.run(AgentLoop(WAITING_SPEC.model_copy(update={"inputs": inputs}), llm, CountingExecutor(),
                                   MemoryStore()).run(enter(first, Phase.RUNNING, "ChildrenFinished", now=NOW)))
    two = second.tool_call_history[1]
    assert (one.key, two.key) == ("u/1/0", "u/2/0") and one.child_run != two.child_run
    assert second.phase is Phase.DELEGATING and two.state is CallState.WAITING  # not answered by the first child
    assert second.tool_call_history[0].result == "A"


def test_duplicate_ids_in_one_reply_fail_the_run_as_an_llm_error():
    store, tools = MemoryStore(), CountingExecutor()
    llm = ScriptedLLM(assistant(calls=[call("0", "deploy", "{}"), call("0", "deploy", "{}")]))
    final = asyncio.run(AgentLoop(WAITING_SPEC, llm, tools, store).run(
        enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))
    assert final.phase is Phase.FAILED and final.phase_history[-1].reason == "LLMError"
    assert "tool call ids must be unique within a reply, and '0' (2 times) repeat" in final.error
    assert final.tool_call_history == [] and final.step == 0 and not tools.calls  # nothing of the reply ran
    assert store.events == [("LLMError", True)]
