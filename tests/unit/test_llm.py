"""OpenAIChatClient against the scripted LLM server: replies, retries and errors as the openai SDK would give them."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import pytest

from actors.llm import LLMError, OpenAIChatClient, _retry_after
from kubechain.api.v1alpha1 import LLMSpec
from kubechain.testing.llm_server import ScriptedLLMServer

MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"}]
TOOLS = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(api_key="k") as srv:
        yield srv


def complete(base_url: str, model: str, key: str | None = "k", messages=MESSAGES, **spec):
    async def go():
        client = OpenAIChatClient(LLMSpec(model=model, base_url=base_url, **spec), key)
        try:
            return await client.complete(messages, TOOLS)
        finally:
            await client.close()
    return asyncio.run(go())


def test_a_tool_call_then_a_final_answer(server):
    server.set_script("calc", [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
                               {"content": "4"}])
    reply = complete(server.base_url, "calc")
    [call] = reply.message.tool_calls
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_0_0", "calculator", {"expression": "2+2"})
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens == (
        reply.usage.prompt_tokens + reply.usage.completion_tokens)
    sent = server.requests()[-1]
    assert sent["messages"] == MESSAGES and sent["tools"] == ["calculator"]

    history = [*MESSAGES, {"role": "assistant", "tool_calls": [call.to_wire()]},
               {"role": "tool", "tool_call_id": call.id, "content": "4"}]
    final = complete(server.base_url, "calc", messages=history)
    assert (final.message.content, final.message.tool_calls) == ("4", None)


def test_rate_limits_and_server_errors_are_retried(server):
    server.clear_requests()
    server.set_script("flaky", [{"content": "finally", "error": {"status": 429, "times": 1}}])
    assert complete(server.base_url, "flaky", max_retries=2).message.content == "finally"
    assert [r["status"] for r in server.requests()] == [429, 200]


def test_errors_are_named_as_the_sdk_names_them(server):
    server.clear_requests()
    server.set_script("down", [{"content": "never", "error": {"status": 500, "times": 10}}])
    with pytest.raises(LLMError, match=r"^InternalServerError: Error code: 500 - Injected error"):
        complete(server.base_url, "down", max_retries=1)
    assert [r["status"] for r in server.requests()] == [500, 500]
    with pytest.raises(LLMError, match=r"^AuthenticationError: Error code: 401"):
        complete(server.base_url, "down", key="wrong", max_retries=3)  # not retried
    assert len(server.requests()) == 3


def test_an_unreachable_server_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMError, match="^APIConnectionError"):
        complete(f"http://127.0.0.1:{port}/v1", "m", max_retries=0)


def test_retry_after_headers():
    assert _retry_after({"retry-after-ms": "1", "retry-after": "0"}) == 0.001
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) < 0
    assert _retry_after({"retry-after": "soon"}) is None and _retry_after({}) is None
