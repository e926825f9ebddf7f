"""The agent loop with a fake LLM and an in-memory checkpoint store (real builtins)."""
import asyncio
from datetime import datetime, timezone

from actors.llm import LLMError, LLMReply
from actors.loop import AgentLoop
from actors.tools.executor import LocalToolExecutor
from kubechain.api.runspec import ResolvedTool, RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import (FunctionCall, LLMSpec, Message, Phase, TaskRunStatus, ToolCall, ToolExecution,
                                    Usage)
from kubechain.core.lifecycle import enter

NOW = datetime.now(timezone.utc)


class ScriptedLLM:
    def __init__(self, *replies):
        self.replies, self.calls = list(replies), []

    async def complete(self, messages, tools):
        self.calls.append((list(messages), tools))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class MemoryStore:
    def __init__(self):
        self.saved, self.events = [], []

    async def load(self):
        return TaskRunStatus()

    async def save(self, status):
        self.saved.append(status.model_copy(deep=True))

    async def event(self, reason, message, warning=False):
        self.events.append((reason, warning))


def call(id_, name, arguments):
    return ToolCall(id=id_, function=FunctionCall(name=name, arguments=arguments))


def assistant(content=None, calls=None, tokens=(10, 5)):
    return LLMReply(Message(role="assistant", content=content, tool_calls=calls),
                    Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1], total_tokens=sum(tokens)))


SPEC = RunSpec(
    taskrun=TaskRunRef(namespace="ns", name="run", uid="u"), agent="a", llm=LLMSpec(model="m"),
    system_prompt="be brief", user_input="what is 2+3?",
    tools=[ResolvedTool(name="calculator", description="math", parameters={"type": "object"},
                        execution=ToolExecution.model_validate({"builtin": {"name": "calculator"}}))])


def run(llm, store):
    status = enter(TaskRunStatus(), Phase.RUNNING, "ActorScheduled", now=NOW)
    return asyncio.run(AgentLoop(SPEC, llm, LocalToolExecutor(SPEC.tools), store).run(status))


def test_tool_call_then_answer_checkpoints_every_step():
    llm = ScriptedLLM(assistant(calls=[call("c1", "calculator", '{"expression": "2+3"}')]), assistant("It is 5."))
    store = MemoryStore()
    final = run(llm, store)
    assert final.phase is Phase.COMPLETED and final.output == "It is 5."
    assert [m.role for m in final.context_window] == ["system", "user", "assistant", "tool", "assistant"]
    assert final.context_window[3].content == "5" and final.context_window[3].tool_call_id == "c1"
    assert final.usage == Usage(prompt_tokens=20, completion_tokens=10, total_tokens=30)
    assert final.step == 2 and [s.step for s in store.saved] == [1, 2]
    assert final.tool_call_history[0].result == "5" and final.tool_call_history[0].error is None
    # The second request carries the tool result, in OpenAI wire format.
    assert llm.calls[1][0][-1] == {"role": "tool", "content": "5", "tool_call_id": "c1"}
    assert llm.calls[0][1][0]["function"]["name"] == "calculator"
    assert store.events == [("FinalAnswer", False)]


def test_unknown_tool_and_bad_json_go_back_to_the_llm():
    llm = ScriptedLLM(assistant(calls=[call("c1", "nope", "{}"), call("c2", "calculator", '{"expression": ')]),
                      assistant("sorry"))
    final = run(llm, MemoryStore())
    errors = [r.error for r in final.tool_call_history]
    assert "unknown tool 'nope'" in errors[0] and "not valid JSON" in errors[1]
    by_call = {m.tool_call_id: m.content for m in final.context_window if m.role == "tool"}
    assert by_call["c1"].startswith("Error: unknown tool") and by_call["c2"].startswith("Error: arguments are not")
    assert final.phase is Phase.COMPLETED


def test_llm_failure_fails_the_run_with_the_error():
    store = MemoryStore()
    final = run(ScriptedLLM(LLMError("RateLimitError: slow down")), store)
    assert final.phase is Phase.FAILED and final.error == "RateLimitError: slow down"
    assert store.saved[-1].phase is Phase.FAILED and store.events == [("LLMError", True)]


# --- the write-ahead tool journal -------------------------------------------------------------

from actors.loop import INTERRUPTED  # noqa: E402
from actors.tools.executor import ToolOutcome  # noqa: E402
from kubechain.api.v1alpha1 import CallState, ToolCallRecord  # noqa: E402


class CountingExecutor:
    def __init__(self):
        self.calls = []

    async def execute(self, name, arguments, call_id, idempotency_key):
        self.calls.append((name, idempotency_key))
        return ToolOutcome(result=f"posted {arguments}")


def http_tool(name, idempotent):
    return ResolvedTool(name=name, description="side effects", parameters={"type": "object"}, idempotent=idempotent,
                        execution=ToolExecution.model_validate({"http": {"url": "http://counter/"}}))


EFFECT_SPEC = SPEC.model_copy(update={"tools": [http_tool("post", False), http_tool("put", True)]})


def test_side_effecting_call_is_journaled_before_it_runs():
    llm = ScriptedLLM(assistant(calls=[call("c1", "post", "{}")]), assistant("done"))
    store, tools = MemoryStore(), CountingExecutor()
    final = asyncio.run(AgentLoop(EFFECT_SPEC, llm, tools, store).run(enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))
    states = [[r.state for r in s.tool_call_history] for s in store.saved]
    assert states == [[CallState.STARTED], [CallState.SUCCEEDED], [CallState.SUCCEEDED]]  # the last: the answer
    assert store.saved[0].context_window[-1].tool_calls[0].id == "c1"  # the reply is in the write-ahead record
    assert tools.calls == [("post", "u/1/c1")] and final.tool_call_history[0].idempotency_key == "u/1/c1"


def resumed(tool: str, state: CallState) -> TaskRunStatus:
    """A status as a crashed actor left it: step 1's reply journaled, its call in `state`."""
    status = enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)
    status.step = 1
    status.context_window = [Message(role="system", content="s"), Message(role="user", content="u"),
                             Message(role="assistant", tool_calls=[call("c1", tool, "{}")])]
    status.tool_call_history = [ToolCallRecord(id="c1", step=1, tool=tool, arguments="{}", state=state,
                                               idempotency_key="u/1/c1", attempts=int(state is CallState.STARTED))]
    return status


def test_started_call_of_a_non_idempotent_tool_is_reported_interrupted_not_rerun():
    llm, tools = ScriptedLLM(assistant("ok")), CountingExecutor()
    final = asyncio.run(AgentLoop(EFFECT_SPEC, llm, tools, MemoryStore()).run(resumed("post", CallState.STARTED)))
    assert tools.calls == [] and final.tool_call_history[0].state is CallState.INTERRUPTED
    assert len(llm.calls) == 1  # only the next step: step 1's reply was not asked for again
    assert llm.calls[0][0][-1] == {"role": "tool", "tool_call_id": "c1", "content": f"Error: {INTERRUPTED}"}


def test_started_call_of_an_idempotent_tool_reruns_with_the_same_key():
    tools = CountingExecutor()
    final = asyncio.run(AgentLoop(EFFECT_SPEC, ScriptedLLM(assistant("ok")), tools, MemoryStore())
                        .run(resumed("put", CallState.STARTED)))
    assert tools.calls == [("put", "u/1/c1")]
    assert final.tool_call_history[0].state is CallState.SUCCEEDED and final.tool_call_history[0].attempts == 2


def test_pending_call_runs_without_asking_the_llm_again():
    llm, tools = ScriptedLLM(assistant("ok")), CountingExecutor()
    final = asyncio.run(AgentLoop(EFFECT_SPEC, llm, tools, MemoryStore()).run(resumed("post", CallState.PENDING)))
    assert tools.calls == [("post", "u/1/c1")] and len(llm.calls) == 1 and final.step == 2


# --- arguments, concurrency, result size, container calls ---------------------------------------

from actors.loop import SHOWN_CHARS  # noqa: E402
from kubechain.api.v1alpha1 import WaitingFor  # noqa: E402
from kubechain.core.naming import tool_job_name  # noqa: E402

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
          "required": ["city"]}


class SlowExecutor:
    """Each call sleeps; records how many ran at once."""

    def __init__(self, seconds=0.05, result="x"):
        self.seconds, self.result, self.running, self.most, self.calls = seconds, result, 0, 0, []

    async def execute(self, name, arguments, call_id, idempotency_key):
        self.calls.append(call_id)
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(self.seconds)
        self.running -= 1
        return ToolOutcome(result=self.result)


def spec_with(*tools, **update):
    return SPEC.model_copy(update={"tools": list(tools), **update})


def tool(name, execution, parameters=None, **fields):
    return ResolvedTool(name=name, description="d", parameters=parameters or {"type": "object", "properties": {}},
                        execution=ToolExecution.model_validate(execution), **fields)


def loop_run(spec, llm, tools, store=None):
    return asyncio.run(AgentLoop(spec, llm, tools, store or MemoryStore()).run(enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW)))


def test_arguments_that_break_the_schema_are_a_tool_error_naming_the_field_and_nothing_runs():
    spec = spec_with(tool("weather", {"http": {"url": "http://w/"}}, SCHEMA))
    llm, tools = ScriptedLLM(assistant(calls=[call("c1", "weather", '{"days": "two"}')]), assistant("ok")), SlowExecutor()
    final = loop_run(spec, llm, tools)
    error = final.tool_call_history[0].error
    assert tools.calls == [] and final.tool_call_history[0].state is CallState.FAILED
    assert "'city' is a required property" in error and "argument 'days': 'two' is not of type 'integer'" in error
    assert llm.calls[1][0][-1]["content"].startswith("Error: invalid arguments")


def test_calls_of_one_turn_run_concurrently_up_to_the_runs_limit():
    spec = spec_with(tool("post", {"http": {"url": "http://w/"}}), max_parallel_tool_calls=3)
    calls = [call(f"c{i}", "post", "{}") for i in range(7)]
    tools, store = SlowExecutor(), MemoryStore()
    final = loop_run(spec, ScriptedLLM(assistant(calls=calls), assistant("ok")), tools, store)
    assert tools.most == 3 and sorted(tools.calls) == sorted(c.id for c in calls)
    assert all(r.state is CallState.SUCCEEDED for r in final.tool_call_history)
    # All seven were journaled Started in one write, before any ran.
    first_started = next(s for s in store.saved if any(r.state is CallState.STARTED for r in s.tool_call_history))
    assert all(r.state is CallState.STARTED for r in first_started.tool_call_history)


def test_a_long_result_is_truncated_for_the_llm_and_kept_whole_in_the_journal():
    spec = spec_with(tool("post", {"http": {"url": "http://w/"}}))
    long = "y" * (SHOWN_CHARS * 3)
    llm = ScriptedLLM(assistant(calls=[call("c1", "post", "{}")]), assistant("ok"))
    final = loop_run(spec, llm, SlowExecutor(0, long))
    shown = llm.calls[1][0][-1]["content"]
    assert shown.startswith("y" * SHOWN_CHARS) and len(shown) < SHOWN_CHARS + 200
    assert f"[truncated: showing {SHOWN_CHARS} of {len(long)} characters" in shown
    assert final.tool_call_history[0].result == long


def test_a_container_call_waits_for_its_job_and_the_run_delegates():
    spec = spec_with(tool("build", {"container": {"image": "busybox"}}, SCHEMA), tool("echo", {"builtin": {"name": "echo"}}))
    llm = ScriptedLLM(assistant(calls=[call("c1", "build", '{"city": "Oslo"}'), call("c2", "echo", '{"a": 1}')]))
    tools, store = SlowExecutor(), MemoryStore()
    final = loop_run(spec, llm, tools, store)
    job, echo = final.tool_call_history
    assert final.phase is Phase.DELEGATING and tools.calls == ["c2"] and echo.state is CallState.SUCCEEDED
    assert job.state is CallState.WAITING and job.waiting_for is WaitingFor.JOB
    assert job.job == tool_job_name("run", "u/1/c1") and job.job in final.message
