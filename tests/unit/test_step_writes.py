"""Status writes per step, by kind of step (issue 23): one for a step that runs nothing with effects, two for one
that does (the write-ahead record, then the results), and the order that makes them safe: an effect never runs
before its Started record is written, and no LLM request goes out before the results of the step before it."""
import asyncio

import pytest

from actors.loop import AgentLoop
from actors.tools.executor import LocalToolExecutor, ToolOutcome
from kubechain.api.v1alpha1 import CallState, HumanResponse, Phase, TaskRunStatus, WaitingFor
from kubechain.core.lifecycle import enter, gather_inputs

from .test_loop import NOW, MemoryStore, ScriptedLLM, assistant, call, http_tool, spec_with, tool
from .test_waiting import WAITING_SPEC

ECHO = tool("echo", {"builtin": {"name": "echo"}})
POST = http_tool("post", False)
PUT = http_tool("put", True)


class WatchedLLM(ScriptedLLM):
    """Records how many writes the store had taken at each request."""

    def __init__(self, store, *replies):
        super().__init__(*replies)
        self.store, self.writes_seen = store, []

    async def complete(self, messages, tools):
        self.writes_seen.append(len(self.store.saved))
        return await super().complete(messages, tools)


class WatchedExecutor:
    """A tool with effects that, as it runs, looks at the last write: its own call must be in it, Started."""

    def __init__(self, store):
        self.store, self.seen = store, []

    async def execute(self, name, arguments, call_id, idempotency_key):
        last = self.store.saved[-1] if self.store.saved else TaskRunStatus()
        self.seen.append(next((r.state for r in last.tool_call_history if r.idempotency_key == idempotency_key), None))
        await asyncio.sleep(0.01 * len(self.seen))  # parallel calls end one after another
        return ToolOutcome(result=f"done {call_id}")


def fresh():
    return enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)


def writes_per_step(llm, store):
    """Writes between consecutive LLM requests (the last entry: the step that answered)."""
    marks = llm.writes_seen + [len(store.saved)]
    return [b - a for a, b in zip(marks, marks[1:])]


@pytest.mark.parametrize("calls, writes", [
    ([call("c1", "echo", '{"a": 1}')], 1),
    ([call("c1", "echo", '{"a": 1}'), call("c2", "echo", '{"b": 2}')], 1),
    ([call("c1", "post", "{}")], 2),
    ([call("c1", "post", "{}"), call("c2", "put", "{}"), call("c3", "post", "{}")], 2),
    ([call("c1", "echo", "{}"), call("c2", "post", "{}")], 2),
    ([call("c1", "post", '{"x": ')], 1),  # bad arguments: nothing runs, nothing to journal ahead
], ids=["pure", "pure-parallel", "effects", "effects-parallel", "mixed", "effects-refused"])
def test_writes_per_step(calls, writes):
    store = MemoryStore()
    llm = WatchedLLM(store, assistant(calls=calls), assistant(calls=calls), assistant("done"))
    executor = WatchedExecutor(store) if writes == 2 else LocalToolExecutor([ECHO])
    final = asyncio.run(AgentLoop(spec_with(ECHO, POST, PUT), llm, executor, store).run(fresh()))
    assert final.phase is Phase.COMPLETED
    assert writes_per_step(llm, store) == [writes, writes, 1]  # two tool rounds, then the answer


def test_an_effect_runs_only_once_its_call_is_written_started_with_the_reply():
    store = MemoryStore()
    llm = WatchedLLM(store, assistant(calls=[call("c1", "post", "{}"), call("c2", "put", "{}")]), assistant("ok"))
    tools = WatchedExecutor(store)
    asyncio.run(AgentLoop(spec_with(POST, PUT), llm, tools, store).run(fresh()))
    assert tools.seen == [CallState.STARTED, CallState.STARTED]
    ahead = store.saved[0]  # the write-ahead record: the reply and both calls, and no result yet
    assert ahead.step == 1 and [c.id for c in ahead.context_window[-1].tool_calls] == ["c1", "c2"]
    assert [r.state for r in ahead.tool_call_history] == [CallState.STARTED] * 2
    # Both results are durable before the next request.
    assert llm.writes_seen == [0, 2] and [r.state for r in store.saved[1].tool_call_history] == [CallState.SUCCEEDED] * 2


def test_a_restored_started_idempotent_call_is_written_again_before_it_reruns():
    from .test_loop import resumed

    store = MemoryStore()
    llm, tools = WatchedLLM(store, assistant("ok")), WatchedExecutor(store)
    final = asyncio.run(AgentLoop(spec_with(POST, PUT), llm, tools, store).run(resumed("put", CallState.STARTED)))
    assert tools.seen == [CallState.STARTED] and store.saved[0].tool_call_history[0].attempts == 2
    assert llm.writes_seen == [2] and final.phase is Phase.COMPLETED


def test_a_call_awaiting_approval_runs_after_a_write_ahead_record_once_approved():
    store = MemoryStore()
    paused = asyncio.run(AgentLoop(WAITING_SPEC, ScriptedLLM(assistant(calls=[call("c1", "deploy", "{}")])),
                                   WatchedExecutor(store), store).run(fresh()))
    assert paused.phase is Phase.PAUSED_FOR_USER_INPUT and len(store.saved) == 1  # the reply, with the call Waiting
    assert store.saved[0].tool_call_history[0].waiting_for is WaitingFor.APPROVAL
    inputs = gather_inputs(paused, {"u/1/c1": HumanResponse(approved=True, by="alice")}, {}, NOW).inputs
    store = MemoryStore()
    llm, tools = WatchedLLM(store, assistant("deployed")), WatchedExecutor(store)
    final = asyncio.run(AgentLoop(WAITING_SPEC.model_copy(update={"inputs": inputs}), llm, tools, store)
                        .run(enter(paused, Phase.RUNNING, "Approved", now=NOW)))
    assert tools.seen == [CallState.STARTED] and llm.writes_seen == [2] and final.phase is Phase.COMPLETED
    assert final.tool_call_history[0].response.by == "alice"


def test_a_delegation_is_one_write_and_starts_nothing():
    store = MemoryStore()
    final = asyncio.run(AgentLoop(WAITING_SPEC, ScriptedLLM(assistant(calls=[call("c1", "research", '{"message": "m"}')])),
                                  WatchedExecutor(store), store).run(fresh()))
    assert final.phase is Phase.DELEGATING and len(store.saved) == 1
    assert store.saved[0].tool_call_history[0].waiting_for is WaitingFor.CHILD_RUN
