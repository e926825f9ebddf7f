"""Tools never stall the actor's event loop: builtins and argument checks run in tool threads with a time limit;
past it the call is a tool error naming the limit, while the loop (and the step's other calls) go on."""
import asyncio
import threading

import pytest

from actors.loop import AgentLoop
from actors.tools import executor, offload
from actors.tools.executor import LocalToolExecutor
from kubechain.api.runspec import ResolvedTool
from kubechain.api.v1alpha1 import Phase, TaskRunStatus, ToolExecution
from kubechain.core.lifecycle import enter
from tests.unit.test_loop import NOW, SPEC, MemoryStore, ScriptedLLM, assistant, call

LIMIT = "the time limit of a tool's work inside the actor (the operator's KUBECHAIN_LOCAL_TOOL_TIMEOUT_SECONDS)"


@pytest.fixture
def held():
    """A builtin (`echo`) and an argument check that block their thread until the test ends: work past any limit."""
    release = threading.Event()
    yield release
    release.set()


async def ticks_while(work, counter):
    """Await `work` while another coroutine counts loop turns: a blocked loop would count none."""
    async def tick():
        while True:
            counter.append(1)
            await asyncio.sleep(0.01)
    ticker = asyncio.ensure_future(tick())
    try:
        return await work
    finally:
        ticker.cancel()


def test_a_builtin_past_its_limit_is_a_tool_error_and_the_loop_keeps_turning(held, monkeypatch):
    monkeypatch.setitem(executor.BUILTINS, "echo", lambda **_: held.wait() and "never")
    echo = ResolvedTool(name="echo", description="e", parameters={"type": "object"},
                        execution=ToolExecution.model_validate({"builtin": {"name": "echo"}}))
    tools, turns = LocalToolExecutor([echo, *SPEC.tools], time_limit=0.2), []

    async def both():
        return await asyncio.gather(tools.execute("echo", "{}", "c1", "k1"),
                                    tools.execute("calculator", '{"expression": "6*7"}', "c2", "k2"))
    stuck, other = asyncio.run(ticks_while(both(), turns))
    assert stuck.error == f"builtin echo did not finish within 0.2 s, {LIMIT}"
    assert other.result == "42"  # the step's other call did not wait for it
    assert turns  # the event loop served others meanwhile


def test_an_argument_check_past_its_limit_fails_the_call_and_the_run_goes_on(held, monkeypatch):
    def slow_check(arguments, schema):
        held.wait()
        return {}, None
    monkeypatch.setattr(offload, "check_arguments", slow_check)
    spec = SPEC.model_copy(update={"local_tool_timeout_seconds": 0.2})
    llm = ScriptedLLM(assistant(calls=[call("c1", "calculator", '{"expression": "2+3"}')]), assistant("gave up"))
    store, turns = MemoryStore(), []
    status = enter(TaskRunStatus(), Phase.RUNNING, "ActorScheduled", now=NOW)
    final = asyncio.run(ticks_while(AgentLoop(spec, llm, LocalToolExecutor(spec.tools), store).run(status), turns))
    assert final.phase is Phase.COMPLETED and turns
    record = final.tool_call_history[0]
    assert (record.state.value, record.error) == ("Failed", f"the argument check did not finish within 0.2 s, {LIMIT}")
    assert llm.calls[1][0][-1]["content"] == f"Error: {record.error}"  # the LLM read it
    assert [s.step for s in store.saved] == [1, 2]  # and the run went on checkpointing


def test_the_calculator_bomb_is_refused_off_the_loop():
    tools = LocalToolExecutor(SPEC.tools, time_limit=10)
    outcome = asyncio.run(tools.execute("calculator", '{"expression": "(9**9999)**3000"}', "c1", "k1"))
    assert outcome.error.startswith("result too large: this power would have about 95,088,240 bits")
