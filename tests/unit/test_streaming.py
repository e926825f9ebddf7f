"""Streaming an answer: the actor's buffer (LiveStream), the pure preview a client prints, and the openai client
against the scripted server's real SSE streams (what a step checkpoints must not depend on streaming)."""
from __future__ import annotations

import asyncio

import pytest

from actors.livestream import MAX_CHARS, LiveStream
from actors.llm import LLMError, OpenAIChatClient
from kubechain.api.v1alpha1 import LLMSpec, Reason
from kubechain.clients.transcript import render_message
from kubechain.core.livestream import Cursor, advance, preview
from kubechain.demo.llm_server import ScriptedLLMServer

CALC = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object", "properties": {
    "expression": {"type": "string"}}}}}
MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


# -- the buffer ---------------------------------------------------------------------------------------------------

def test_a_reader_gets_what_is_past_its_cursor_and_a_new_attempt_from_its_start():
    live = LiveStream("src")
    live.begin(3)
    live.add({"c": "ab"})
    live.add({"c": "cd"})
    first = live.since(0, "", 0, 0)
    assert (first["step"], first["attempt"], first["offset"], first["deltas"]) == (3, 1, 0, [{"c": "ab"}, {"c": "cd"}])
    cursor = Cursor().after(first)
    live.add({"c": "ef"})
    assert live.since(cursor.step, cursor.source, cursor.attempt, cursor.offset)["deltas"] == [{"c": "ef"}]
    live.end(failed=True)
    live.begin(3)  # the broken request asked again
    live.add({"c": "xy"})
    again = live.since(cursor.step, cursor.source, cursor.attempt, 3)
    assert (again["attempt"], again["offset"], again["deltas"]) == (2, 0, [{"c": "xy"}])
    live.begin(4)
    assert live.since(4, "src", 2, 0)["attempt"] == 1  # attempts count per step


def test_deltas_outside_a_step_and_past_the_bounds_are_not_kept():
    live = LiveStream()
    live.add({"c": "summary request"})  # no step open: a compaction's request
    live.begin(1)
    live.add({"c": "x" * (MAX_CHARS - 1)})
    live.add({"c": "yy"})
    batch = live.since(1, live.source, 1, 0)
    assert len(batch["deltas"]) == 1 and batch["cut"]


def test_a_long_poll_returns_when_a_delta_comes_and_after_its_wait_when_none_does():
    async def scenario():
        live = LiveStream("s")
        live.begin(1)
        waiting = asyncio.create_task(live.wait_since(1, "s", 1, 0, wait=30))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        live.add({"c": "hi"})
        assert (await asyncio.wait_for(waiting, 5))["deltas"] == [{"c": "hi"}]
        assert (await live.wait_since(1, "s", 1, 1, wait=0.01))["deltas"] == []
    asyncio.run(scenario())


# -- what a client prints -----------------------------------------------------------------------------------------

def test_the_preview_grows_into_the_checkpointed_message():
    from kubechain.api.v1alpha1 import FunctionCall, Message, ToolCall

    deltas = [{"c": "Let me "}, {"c": "compute."}, {"t": 0, "id": "c1", "n": "calculator", "a": ""},
              {"t": 0, "a": '{"expression": '}, {"t": 0, "a": '"6*7"}'}, {"t": 1, "id": "c2", "n": "echo", "a": "{}"}]
    texts = [preview(deltas[:n]) for n in range(len(deltas) + 1)]
    final = Message(role="assistant", content="Let me compute.", tool_calls=[
        ToolCall(id="c1", function=FunctionCall(name="calculator", arguments='{"expression": "6*7"}')),
        ToolCall(id="c2", function=FunctionCall(name="echo", arguments="{}"))])
    checkpointed = render_message(final, full=True).removeprefix("[assistant] ")
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:] + [checkpointed]))  # never takes anything back
    assert texts[-1] == 'Let me compute.→ calculator({"expression": "6*7"}) [c1]→ echo({}'


@pytest.mark.parametrize("shown, target, printed, restart", [
    ("", "abc", "abc", False),
    ("ab", "abcd", "cd", False),
    ("abcd", "ab", "", False),        # a replacement actor's stream catching up: nothing twice
    ("abX", "abcd", "abcd", True),    # a broken attempt's partial: the whole new text, said to restart
])
def test_advance_prints_only_what_is_new(shown, target, printed, restart):
    step = advance(shown, target)
    assert (step.text, step.restart) == (printed, restart)


# -- the openai client against real streams -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    with ScriptedLLMServer() as srv:
        yield srv


def _ask(server, model, live=None, tools=()):
    async def go():
        client = OpenAIChatClient(LLMSpec(baseURL=server.base_url, model=model), "k", live)
        try:
            return await client.complete(MESSAGES, list(tools)), client.streams
        finally:
            await client.close()
    return asyncio.run(go())


@pytest.mark.parametrize("step", [
    {"content": "The answer is forty-two, as computed above." * 3, "stream_chunk": 3},
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}, {"name": "calculator", "arguments": {
        "expression": "1+1"}}], "stream_chunk": 2},
    {"content": "", "finish_reason": "length"},
], ids=["content", "tool-calls", "empty-cut-off"])
def test_a_streamed_reply_is_the_whole_reply(server, step):
    server.set_script("same", [step])
    live = LiveStream()
    live.begin(1)
    streamed, streaming = _ask(server, "same", live, [CALC])
    whole, _ = _ask(server, "same", None, [CALC])
    assert streaming and streamed == whole  # message, usage and finish reason alike
    deltas = live.since(1, live.source, 1, 0)["deltas"]
    assert len([d for d in deltas if "c" in d or "t" in d]) > 1 or not (step.get("content") or step.get("tool_calls"))
    assert deltas[-1] == {"u": {"prompt": whole.usage.prompt_tokens, "completion": whole.usage.completion_tokens}}
    assert preview([d for d in deltas if "u" not in d]) in render_message(whole.message, full=True)


def test_a_server_or_model_that_refuses_streaming_gets_whole_requests(server):
    server.set_script("refuses", [{"content": "whole answer", "refuse": ["stream"]}])
    server.clear_requests()
    live = LiveStream()
    live.begin(1)
    reply, streaming = _ask(server, "refuses", live)
    assert reply.message.content == "whole answer" and not streaming
    assert [bool(r["params"].get("stream")) for r in server.requests()] == [True, False]
    with ScriptedLLMServer(streams=False) as plain:
        assert _ask(plain, "x", LiveStream())[0].message.content == "You said: u"


def test_a_server_that_ignores_stream_and_answers_whole_is_read_whole_and_not_streamed_again(server):
    server.set_script("ignores", [{"content": "whole answer", "ignore": ["stream"]}])
    server.clear_requests()
    live = LiveStream()
    live.begin(1)
    reply, streaming = _ask(server, "ignores", live)
    assert reply.message.content == "whole answer" and reply.usage.completion_tokens > 0 and not streaming
    assert [bool(r["params"].get("stream")) for r in server.requests()] == [True]  # one request, read as it came


def test_a_stream_that_breaks_mid_way_is_a_retryable_failed_request(server):
    server.set_script("breaks", [{"content": "y" * 100, "stream_break": {"after": 5, "times": 1}}])
    live = LiveStream()
    live.begin(1)
    with pytest.raises(LLMError) as broken:
        _ask(server, "breaks", live)
    assert broken.value.retryable and broken.value.reason is Reason.UNREACHABLE
    assert 0 < len(live.since(1, live.source, 1, 0)["deltas"]) < 25  # a partial: readers saw it forming
    assert _ask(server, "breaks", live)[0].message.content == "y" * 100  # asked again: whole


def test_an_error_sent_inside_the_stream_is_a_retryable_failed_request():
    from actors.llm import sse_chunks

    class Response:
        def __init__(self, *lines):
            self.lines = lines

        async def aiter_lines(self):
            for line in self.lines:
                yield line

    async def read(response):
        return [chunk async for chunk in sse_chunks(response)]

    ok = Response('data: {"choices": []}', "", "data: [DONE]", 'data: {"never": "read"}')
    assert asyncio.run(read(ok)) == [{"choices": []}]
    for failing in (Response('data: {"error": {"message": "overloaded"}}'),
                    Response("event: error", 'data: {"message": "boom"}')):
        with pytest.raises(LLMError) as failed:
            asyncio.run(read(failing))
        assert failed.value.retryable and failed.value.reason is Reason.SERVER_ERROR


def test_the_loop_writes_the_same_checkpoints_with_a_live_stream_and_without():
    """The stream is for readers only: the same saves, of the same statuses, once per step as before; a failed
    request's partial is marked so, and a step's stream opens only for that step's request."""
    from datetime import datetime, timezone

    from actors.loop import AgentLoop
    from actors.tools.executor import LocalToolExecutor
    from kubechain.api.v1alpha1 import Phase, TaskRunStatus
    from kubechain.core.lifecycle import enter
    from tests.unit.test_loop import SPEC, MemoryStore, ScriptedLLM, assistant, call

    class Streaming(ScriptedLLM):  # streams its reply's content into the loop's LiveStream, as the client does
        live = None

        async def complete(self, messages, tools):
            reply = await super().complete(messages, tools)
            for piece in (reply.message.content or "").split(" "):
                self.live.add({"c": piece + " "})
            return reply

    def conversation(live):
        llm = Streaming(assistant(calls=[call("c1", "calculator", '{"expression": "2+3"}')]), assistant("It is 5."))
        llm.live, store = live, MemoryStore()
        status = enter(TaskRunStatus(), Phase.RUNNING, "ActorScheduled", now=datetime.now(timezone.utc))
        asyncio.run(AgentLoop(SPEC, llm, LocalToolExecutor(SPEC.tools), store, live=live).run(status))
        strip = {"phase_history", "conditions", "tool_call_history"}  # times differ between two runs
        return [s.model_dump(exclude=strip) | {"calls": [(c.id, c.state) for c in s.tool_call_history]}
                for s in store.saved]

    live = LiveStream("s")
    streamed, plain = conversation(live), conversation(LiveStream("unread"))
    assert len(streamed) == 2 and [s["step"] for s in streamed] == [1, 2]
    for a, b in zip(streamed, plain):
        assert {k: v for k, v in a.items() if "time" not in k} == {k: v for k, v in b.items() if "time" not in k}
    batch = live.since(0, "", 0, 0)
    assert (batch["step"], batch["attempt"], batch["open"]) == (2, 1, False)
    assert preview(batch["deltas"]) == "It is 5. " and batch["head"] == []  # step 1 checkpointed the head
