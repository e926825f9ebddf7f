"""The scripted LLM server, driven through the real openai SDK as the agents would drive it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from kubechain.demo.llm_server import ScriptedLLMServer

CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate arithmetic",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}
CURRENT_TIME = {"type": "function", "function": {
    "name": "current_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_log(server: ScriptedLLMServer) -> None:
    server.clear_requests()


def client(server: ScriptedLLMServer, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", **kwargs)


def test_tool_call_then_templated_final_answer(server: ScriptedLLMServer) -> None:
    server.set_script("calc", [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
        {"content": "The result is {last_tool_result}!"},
    ])
    llm = client(server)
    messages = [{"role": "system", "content": "be terse"}, {"role": "user", "content": "2+2?"}]

    first = llm.chat.completions.create(model="calc", messages=messages, tools=[CALCULATOR])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert first.object == "chat.completion" and first.model == "calc"
    (call,) = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("call_0_0", "function", "calculator")
    assert json.loads(call.function.arguments) == {"expression": "2+2"}

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "4"}]
    second = llm.chat.completions.create(model="calc", messages=messages, tools=[CALCULATOR])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The result is 4!"
    assert second.choices[0].message.tool_calls is None

    log = server.requests()
    assert [(r["model"], r["step"], r["status"], r["tools"]) for r in log] == [
        ("calc", 0, 200, ["calculator"]), ("calc", 1, 200, ["calculator"])]
    assert log[1]["messages"][-1]["content"] == "4"


def test_usage_follows_the_character_formula(server: ScriptedLLMServer) -> None:
    server.set_script("usage", [{"content": "x" * 41}])
    messages = [{"role": "system", "content": "s" * 10},
                {"role": "user", "content": "u" * 25},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "c1", "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "2"}]
    # 10 + 25 + len('{"expression": "1+1"}')=21 + 1 = 57 chars -> 14 tokens; 41 chars -> 10 tokens
    usage = client(server).chat.completions.create(model="usage", messages=messages).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (14, 10, 24)

    tiny = client(server).chat.completions.create(
        model="usage", messages=[{"role": "user", "content": "hi"}]).usage
    assert tiny.prompt_tokens == 1  # never zero

    server.set_script("usage-tools", [{"tool_calls": [{"name": "f", "arguments": "a" * 17}]}])
    reply = client(server).chat.completions.create(
        model="usage-tools", messages=[{"role": "user", "content": "u" * 8}])
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 4)


def test_step_is_chosen_by_assistant_message_count(server: ScriptedLLMServer) -> None:
    server.set_script("steps", [{"content": "zero"}, {"content": "one"}, {"content": "last"}])
    llm = client(server)

    def ask(n_assistant: int) -> str | None:
        messages = [{"role": "user", "content": "q"}]
        for i in range(n_assistant):
            messages += [{"role": "assistant", "content": f"a{i}"}, {"role": "user", "content": "q"}]
        return llm.chat.completions.create(model="steps", messages=messages).choices[0].message.content

    # out of order and repeated: no hidden per-server progress
    assert [ask(1), ask(0), ask(1), ask(2), ask(5), ask(0)] == ["one", "zero", "one", "last", "last", "zero"]


def test_a_compacted_conversation_keeps_its_step_from_the_call_ids(server: ScriptedLLMServer) -> None:
    server.set_script("ids", [{"tool_calls": [{"name": "echo"}]}] * 5 + [{"content": "fifth"}])
    latest = {"role": "assistant", "tool_calls": [
        {"id": "call_4_0", "type": "function", "function": {"name": "echo", "arguments": "{}"}}]}
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, latest,
                {"role": "tool", "tool_call_id": "call_4_0", "content": "r"}]  # turns 0-3 left out
    reply = client(server).chat.completions.create(model="ids", messages=messages)
    assert reply.choices[0].message.content == "fifth"


def test_a_context_window_refuses_long_prompts_and_summaries_are_answered(server: ScriptedLLMServer) -> None:
    server.set_script("small", [{"content": "fits", "context_window": 100}])
    llm = client(server, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        llm.chat.completions.create(model="small", messages=[{"role": "user", "content": "x" * 404}])
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in info.value.message and "101 tokens" in info.value.message
    assert llm.chat.completions.create(model="small", messages=[{"role": "user", "content": "x" * 400}]
                                       ).choices[0].message.content == "fits"
    ask = [{"role": "system", "content": "Summarise the conversation below ..."},
           {"role": "user", "content": "user: take notes\nassistant: noted"}]
    assert llm.chat.completions.create(model="small", messages=ask).choices[0].message.content == (
        "Summary of 2 entries: user: take notes\nassistant: noted")


def test_rate_limit_is_retried_by_the_sdk(server: ScriptedLLMServer) -> None:
    server.set_script("flaky", [{"content": "finally", "error": {"status": 429, "times": 1, "retry_after_ms": 1}}])
    messages = [{"role": "user", "content": "rate limit me"}]
    reply = client(server, max_retries=2).chat.completions.create(model="flaky", messages=messages)
    assert reply.choices[0].message.content == "finally"
    assert [r["status"] for r in server.requests()] == [429, 200]

    # the error budget is per conversation: another conversation gets its own 429
    with pytest.raises(openai.RateLimitError) as info:
        client(server, max_retries=0).chat.completions.create(
            model="flaky", messages=[{"role": "user", "content": "another"}])
    assert info.value.status_code == 429
    assert info.value.body["type"] == "rate_limit_error"
    # what the script says to wait comes as a provider says it
    assert info.value.response.headers["retry-after-ms"] == "1"


def test_retry_after_in_seconds_and_as_a_date(server: ScriptedLLMServer) -> None:
    from email.utils import parsedate_to_datetime

    server.set_script("slow", [{"content": "ok", "error": {"status": 503, "times": 1, "retry_after": 7}}])
    server.set_script("dated", [{"content": "ok", "error": {"status": 429, "times": 1, "retry_after_date": 30}}])
    for model, check in (("slow", lambda v: v == "7"),
                         ("dated", lambda v: 25 < parsedate_to_datetime(v).timestamp() - time.time() <= 31)):
        with pytest.raises(openai.APIStatusError) as info:
            client(server, max_retries=0).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert check(info.value.response.headers["retry-after"]), info.value.response.headers


def test_server_error_without_retries_raises(server: ScriptedLLMServer) -> None:
    server.set_script("broken", [{"content": "ok", "error": {"status": 500, "times": 1}}])
    messages = [{"role": "user", "content": "break"}]
    with pytest.raises(openai.InternalServerError) as info:
        client(server, max_retries=0).chat.completions.create(model="broken", messages=messages)
    assert info.value.status_code == 500
    assert set(info.value.body) >= {"message", "type", "code"}
    # budget used up: the same conversation now succeeds
    reply = client(server, max_retries=0).chat.completions.create(model="broken", messages=messages)
    assert reply.choices[0].message.content == "ok"
    assert [r["status"] for r in server.requests()] == [500, 200]


def test_malformed_arguments_pass_through_verbatim(server: ScriptedLLMServer) -> None:
    raw = '{"expression": "2+2"'
    server.set_script("sloppy", [{"tool_calls": [{"name": "calculator", "arguments": raw, "id": "x1"}]}])
    reply = client(server).chat.completions.create(
        model="sloppy", messages=[{"role": "user", "content": "go"}], tools=[CALCULATOR])
    (call,) = reply.choices[0].message.tool_calls
    assert (call.id, call.function.arguments) == ("x1", raw)


def test_latency_is_injected(server: ScriptedLLMServer) -> None:
    server.set_script("slow", [{"content": "done", "latency": 0.3}])
    started = time.monotonic()
    client(server).chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started >= 0.3


def test_demo_calls_calculator_then_answers(server: ScriptedLLMServer) -> None:
    llm = client(server)
    messages = [{"role": "user", "content": "Please compute (12 + 3) * 4 for me."}]
    first = llm.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR, CURRENT_TIME])
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "(12 + 3) * 4"}

    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "60"}]
    final = llm.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR])
    assert final.choices[0].message.content == "The answer is 60."

    timed = llm.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "What time is it?"}], tools=[CURRENT_TIME])
    assert timed.choices[0].message.tool_calls[0].function.name == "current_time"
    echo = llm.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello"}])
    assert echo.choices[0].message.content == "You said: hello"
    assert "demo" in [m.id for m in llm.models.list()]


def test_a_server_that_cannot_stream_refuses_it_and_a_model_may_refuse_it_too(server: ScriptedLLMServer) -> None:
    with ScriptedLLMServer(streams=False) as plain, pytest.raises(openai.BadRequestError):
        client(plain).chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}], stream=True)
    server.set_script("no-stream", [{"content": "whole", "refuse": ["stream"]}])
    with pytest.raises(openai.BadRequestError, match="'stream' is not supported"):
        client(server).chat.completions.create(model="no-stream", messages=[{"role": "user", "content": "x"}],
                                               stream=True)
    whole = client(server).chat.completions.create(model="no-stream", messages=[{"role": "user", "content": "x"}])
    assert whole.choices[0].message.content == "whole"


def test_a_streamed_answer_arrives_in_chunks_with_usage_last(server: ScriptedLLMServer) -> None:
    server.set_script("streamed", [{"content": "The quick brown fox jumps.", "stream_chunk": 5}])
    messages = [{"role": "user", "content": "tell me"}]
    stream = client(server).chat.completions.create(model="streamed", messages=messages, stream=True,
                                                    stream_options={"include_usage": True})
    got = list(stream)
    assert got[0].choices[0].delta.role == "assistant" and got[0].object == "chat.completion.chunk"
    pieces = [c.choices[0].delta.content for c in got if c.choices and c.choices[0].delta.content]
    assert pieces == ["The q", "uick ", "brown", " fox ", "jumps", "."]
    assert [c.choices[0].finish_reason for c in got if c.choices][-1] == "stop"
    assert not got[-1].choices and got[-1].usage.completion_tokens == len("The quick brown fox jumps.") // 4
    assert all(c.usage is None for c in got[:-1])  # as OpenAI: usage only in the last chunk
    whole = client(server).chat.completions.create(model="streamed", messages=messages)
    assert whole.usage.model_dump() == got[-1].usage.model_dump()  # the same counts either way
    (entry,) = [r for r in server.requests() if r["params"].get("stream")]
    assert len(entry["chunk_times"]) == len(got)


def test_streamed_tool_calls_form_from_deltas(server: ScriptedLLMServer) -> None:
    server.set_script("streamed-calls", [{"tool_calls": [
        {"name": "calculator", "arguments": {"expression": "6*7"}}, {"name": "current_time", "arguments": {}}],
        "stream_chunk": 3}])
    got = list(client(server).chat.completions.create(model="streamed-calls", messages=[
        {"role": "user", "content": "x"}], tools=[CALCULATOR, CURRENT_TIME], stream=True))
    assert all(c.usage is None for c in got)  # no include_usage: no usage chunk
    deltas = [d for c in got for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == "call_0_0" and deltas[0].function.name == "calculator" and deltas[0].function.arguments == ""
    assert [d.index for d in deltas if d.id] == [0, 1]
    assert all(d.id is None and d.function.name is None for d in deltas if d.function.arguments)
    formed = {}
    for d in deltas:
        formed[d.index] = formed.get(d.index, "") + (d.function.arguments or "")
    assert json.loads(formed[0]) == {"expression": "6*7"} and json.loads(formed[1]) == {}
    assert got[-1].choices[0].finish_reason == "tool_calls"


def test_a_stream_can_break_mid_way_once(server: ScriptedLLMServer) -> None:
    server.set_script("breaks", [{"content": "x" * 40, "stream_break": {"after": 3, "times": 1}}])
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(Exception) as broken:
        list(client(server, max_retries=0).chat.completions.create(model="breaks", messages=messages, stream=True))
    assert "openai" in type(broken.value).__module__ or "httpx" in type(broken.value).__module__
    again = list(client(server).chat.completions.create(model="breaks", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == "x" * 40


def test_api_key_is_enforced() -> None:
    with ScriptedLLMServer(api_key="sekret") as srv:
        srv.set_script("m", [{"content": "authorized"}])
        messages = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).chat.completions.create(
                model="m", messages=messages)
        ok = openai.OpenAI(base_url=srv.base_url, api_key="sekret").chat.completions.create(
            model="m", messages=messages)
        assert ok.choices[0].message.content == "authorized"
        assert [r["status"] for r in srv.requests()] == [401, 200]


def test_control_api_over_http(server: ScriptedLLMServer) -> None:
    def call(method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        url = server.base_url.removesuffix("/v1") + path
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method)) as resp:
            return json.loads(resp.read())

    call("PUT", "/_scripts/http-model", [{"content": "via http"}])
    reply = client(server).chat.completions.create(
        model="http-model", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "via http"
    assert [r["model"] for r in call("GET", "/_requests")] == ["http-model"]
    call("DELETE", "/_requests")
    assert call("GET", "/_requests") == []
    call("DELETE", "/_scripts/http-model")
    assert "http-model" not in [m.id for m in client(server).models.list()]


def test_a_server_wide_outage_fails_every_request_until_it_ends(server: ScriptedLLMServer) -> None:
    server.set_script("steady", [{"content": "up"}])

    def ask(text: str):
        return client(server, max_retries=0).chat.completions.create(
            model="steady", messages=[{"role": "user", "content": text}])

    until = server.set_outage({"status": 503, "seconds": 60, "retry_after": 7})
    assert 59 < until - time.time() <= 60
    for text in ("a", "b"):  # every conversation, whatever its script says
        with pytest.raises(openai.InternalServerError) as info:
            ask(text)
        assert info.value.status_code == 503 and info.value.response.headers["retry-after"] == "7"
    time.sleep(max(0.0, server.set_outage({"status": 503, "seconds": 0.01}) - time.time() + 0.01))
    assert ask("a").choices[0].message.content == "up"  # over by itself

    url = server.base_url.removesuffix("/v1") + "/_outage"
    put = urllib.request.Request(url, data=json.dumps({"status": 500, "seconds": 60}).encode(), method="PUT")
    with urllib.request.urlopen(put) as resp:
        assert json.loads(resp.read())["until"] > time.time() + 59
    with pytest.raises(openai.InternalServerError):
        ask("c")
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE")) as resp:
        assert json.loads(resp.read()) == {"until": None}
    assert ask("c").choices[0].message.content == "up"  # ended early
    assert [r["status"] for r in server.requests()] == [503, 503, 200, 500, 200]  # logged like any request
    with pytest.raises(ValueError):
        server.set_outage({"status": 503})


def test_invalid_script_is_refused(server: ScriptedLLMServer) -> None:
    with pytest.raises(ValueError):
        server.set_script("bad", [{"contnet": "typo"}])


def test_cli_prints_listening_line(tmp_path) -> None:
    script = tmp_path / "steps.yaml"
    script.write_text("- content: from yaml\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubechain.demo.llm_server", "--port", "0",
         "--script", f"cli-model={script}"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1")
        base_url = line.removeprefix("listening on ")
        reply = openai.OpenAI(base_url=base_url, api_key="k").chat.completions.create(
            model="cli-model", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "from yaml"
    finally:
        proc.terminate()
        proc.wait(5)


def test_every_model_is_served_until_declared_unknown(server: ScriptedLLMServer) -> None:
    sdk = client(server, max_retries=0)
    assert sdk.models.retrieve("never-scripted").id == "never-scripted"  # like a proxy: any name
    server.set_script("scripted-known", [{"content": "hi"}])
    server.set_unknown_models(["retired", "scripted-known"])
    try:
        for model in ("retired", "scripted-known"):
            with pytest.raises(openai.NotFoundError) as retrieved:
                sdk.models.retrieve(model)
            assert retrieved.value.code == "model_not_found" and f"`{model}` does not exist" in retrieved.value.message
            with pytest.raises(openai.NotFoundError) as chatted:
                sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
            assert chatted.value.code == "model_not_found"
        assert "scripted-known" not in [m.id for m in sdk.models.list()]
    finally:
        server.set_unknown_models([])
    assert sdk.models.retrieve("retired").id == "retired"


def test_unknown_models_over_http(server: ScriptedLLMServer) -> None:
    def call(method: str, body: object = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(server.base_url.removesuffix("/v1") + "/_models", data=data, method=method)
        try:
            with urllib.request.urlopen(request) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert call("PUT", {"unknown": ["b", "a"]}) == (200, {"unknown": ["a", "b"]})
    assert call("GET") == (200, {"unknown": ["a", "b"]})
    with pytest.raises(openai.NotFoundError):
        client(server, max_retries=0).models.retrieve("a")
    assert call("PUT", {"unknown": "a"})[0] == 400
    assert call("PUT", {"unknown": []}) == (200, {"unknown": []})


def test_the_models_endpoints_want_the_key() -> None:
    with ScriptedLLMServer(api_key="sekret") as srv:
        wrong = openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.retrieve("m")
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        assert openai.OpenAI(base_url=srv.base_url, api_key="sekret").models.retrieve("m").id == "m"


def test_a_server_without_models_endpoints_still_chats() -> None:
    with ScriptedLLMServer(lists_models=False) as srv:
        sdk = openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0)
        for request in (lambda: sdk.models.retrieve("m"), sdk.models.list):
            with pytest.raises(openai.NotFoundError) as absent:
                request()
            assert absent.value.code is None  # a missing route, not OpenAI's model_not_found
        reply = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "You said: hi"


def test_cli_without_models_endpoint() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kubechain.demo.llm_server", "--port", "0", "--no-models-endpoint"],
                            stdout=subprocess.PIPE, text=True)
    try:
        base_url = proc.stdout.readline().strip().removeprefix("listening on ")
        with pytest.raises(urllib.error.HTTPError) as absent:
            urllib.request.urlopen(base_url + "/models")
        assert absent.value.code == 404
    finally:
        proc.terminate()
        proc.wait(5)


def test_a_held_reply_waits_for_its_gate_and_the_request_shows_meanwhile(server: ScriptedLLMServer) -> None:
    import threading

    server.set_script("held", [{"content": "let go", "hold": "g1"}])
    answers: list[str] = []
    asker = threading.Thread(target=lambda: answers.append(client(server).chat.completions.create(
        model="held", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content))
    asker.start()
    deadline = time.monotonic() + 10
    while not [r for r in server.requests() if r["model"] == "held"]:
        assert time.monotonic() < deadline, "the held request was never recorded"
        time.sleep(0.05)
    asker.join(0.5)
    assert asker.is_alive() and answers == [], "the reply went before its gate opened"
    urllib.request.urlopen(urllib.request.Request(f"http://{server.host}:{server.port}/_gates/g1", method="PUT"))
    asker.join(10)
    assert answers == ["let go"]
    with pytest.raises(ValueError, match="'hold' names the gate"):
        server.set_script("held", [{"content": "x", "hold": 3}])


def test_a_held_stream_pauses_after_its_chunks_until_the_gate_opens(server: ScriptedLLMServer) -> None:
    import threading

    server.set_script("held-stream", [{"content": "abcdefghij", "stream_chunk": 2,
                                       "stream_hold": {"after": 3, "gate": "g2"}}])  # the role chunk, then 2
    pieces: list[str] = []

    def read() -> None:
        for event in client(server).chat.completions.create(
                model="held-stream", messages=[{"role": "user", "content": "hi"}], stream=True):
            pieces.extend(c.delta.content or "" for c in event.choices)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while "".join(pieces) != "abcd":
        assert time.monotonic() < deadline, f"the first two chunks never came: {pieces}"
        time.sleep(0.05)
    reader.join(0.5)
    assert reader.is_alive() and "".join(pieces) == "abcd", "the stream went on before its gate opened"
    server.open_gate("g2")
    reader.join(10)
    assert "".join(pieces) == "abcdefghij"
