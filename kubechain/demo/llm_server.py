"""A scripted OpenAI-compatible chat-completions server for tests, benchmarks and the demo.

There is no real model here (and no internet): replies come from *scripts* keyed by the
request's ``model``. A script is a list of steps; the step used for a request is the number of
assistant messages already in the request, so the server is stateless per conversation (a retried
or resumed conversation gets the same reply, concurrent conversations never interfere). Past the
end of a script the last step repeats. Step format (dicts, loadable from YAML or JSON)::

    {"content": "final answer, may quote {last_tool_result}"}
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}, "id": "optional"}]}
    {"tool_calls": [{"name": "calculator", "arguments": "{not json"}]}   # raw string, verbatim
    # optional on any step:
    "latency": 0.1                                     # seconds to wait before replying
    "hold": "gate"                                     # wait (before any latency) until the gate is opened:
                                                       # PUT /_gates/gate (ScriptedLLMServer.open_gate), so
                                                       # a test knows every run is in flight, whatever the load
    "finish_reason": "length"                          # as if cut off at the token limit
    "refuse": ["max_tokens", "temperature"]            # 400 unsupported_parameter, as reasoning models do
    "context_window": 6000                             # 400 context_length_exceeded past this many prompt tokens
    "stream_chunk": 4, "stream_delay": 0.01            # with `stream: true`: characters per chunk, seconds between
    "stream_break": {"after": 20, "times": 1}          # the first hit's stream drops after 20 chunks (no [DONE])
    "stream_hold": {"after": 20, "gate": "g"}          # the stream pauses after 20 chunks until gate g opens
    "error": {"status": 429, "times": 2}               # first 2 hits of this step, per conversation,
                                                       # fail with that status, then reply normally
                                                       # (optional "message", "code", and what a provider
                                                       # says to wait: "retry_after" seconds, "retry_after_date"
                                                       # seconds from now as an HTTP-date, "retry_after_ms")

``stream: true`` is answered with server-sent ``chat.completion.chunk`` events exactly as OpenAI sends them
(kubechain/demo/streaming.py), a ``usage`` chunk last with ``stream_options.include_usage``; each streamed request's
log entry has ``chunk_times`` (when each chunk left). A server started with ``streams=False`` (``--no-stream``)
refuses ``stream`` with 400 as servers that cannot stream do; ``"refuse": ["stream"]`` on a step: a model that
refuses it; ``"ignore": ["stream"]``: a server that ignores it and answers the whole message as JSON.

A conversation is identified by (model, contents of its first two messages). Default tool call ids
are ``call_<step>_<index>``. Models without a script (and ``demo``) get a small rule-based
behaviour: call ``calculator`` for arithmetic, ``current_time`` when asked for the time, then
answer "The answer is <tool result>.", otherwise echo "You said: <text>".

Usage is deterministic: prompt_tokens = max(1, chars of message contents and tool call arguments
// 4), completion_tokens = max(1, chars of reply content and tool call arguments // 4).

Control API (no auth): ``PUT/DELETE /_scripts/{model}``, ``GET/DELETE /_requests``, ``GET/PUT /_models``
(models declared unknown: kubechain/demo/models.py), and a server-wide outage: ``PUT /_outage``
``{"status": 503, "seconds": 300}`` (optional "message", "code", "retry_after"...) fails every chat request with
that error for that long (``DELETE`` ends it sooner; ``ScriptedLLMServer.set_outage``); ``PUT /_gates/{name}`` opens a
"hold" gate.
CLI: ``python -m kubechain.demo.llm_server --port 8000 [--script model=steps.yaml] [--api-key K]
[--no-models-endpoint] [--no-stream]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from typing import Any

import yaml
from aiohttp import web

from .completions import (Step, completion_body, error_response, offered_tools, prompt_chars, retry_headers,
                          step_index, token_count)
from .models import add_routes, model_not_found
from .rules import summary_step
from .scripts import MAX_RECORDED_REQUESTS, ScriptState, load_script, validate_steps  # noqa: F401  (re-exported)
from .streaming import chunks

STATE_KEY = web.AppKey("state", ScriptState)
PLAIN = {"model", "messages", "tools"}  # the rest of a request body is logged as its "params"


def _authorized(request: web.Request) -> bool:
    key = request.app[STATE_KEY].api_key
    return key is None or request.headers.get("Authorization") == f"Bearer {key}"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    entry = state.record({"model": None, "received_at": time.time(), "step": None,
                          "messages": [], "tools": [], "status": None})
    try:
        body = await request.json()
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError("body must be an object with a 'messages' list of objects")
        entry.update(model=str(body.get("model", "")), messages=body["messages"], tools=offered_tools(body),
                     step=step_index(body["messages"]), params={k: v for k, v in body.items() if k not in PLAIN})
    except ValueError as exc:
        entry["status"] = 400
        return error_response(400, f"invalid request body: {exc}")
    response = await _reply(state, body, entry, _authorized(request))
    if isinstance(response, dict):  # a step to stream
        return await _stream(request, state, body, entry, response)
    entry["status"] = response.status  # the entry was recorded on arrival so in-flight requests show
    return response


async def _reply(state: ScriptState, body: dict[str, Any], entry: dict[str, Any],
                 authorized: bool) -> web.Response | Step:
    """The answer, or the step to stream (`stream: true`)."""
    if not authorized:
        return error_response(401, "Incorrect API key provided.", "invalid_api_key")
    if body.get("stream") and not state.streams:
        return error_response(400, "stream=true is not supported by this server.", "unsupported_parameter")
    if (outage := state.outage) and time.time() < outage[0]:
        return error_response(int(outage[1]["status"]), outage[1].get("message", "Scripted outage."),
                              outage[1].get("code"), headers=retry_headers(outage[1]))
    model, messages, index = entry["model"], entry["messages"], entry["step"]
    if not state.served.serves(model):
        return model_not_found(model)
    step = summary_step(messages) or state.step_for(model, messages, entry["tools"], index)
    error = state.take_error(model, messages, index, step)
    while (gate := step.get("hold")) and gate not in state.open_gates:
        await asyncio.sleep(0.05)
    if step.get("latency"):
        await asyncio.sleep(float(step["latency"]))
    if error:
        return error_response(int(error["status"]), error.get("message", "Injected error from script."),
                              error.get("code"), headers=retry_headers(error))
    if refused := sorted(set(step.get("refuse", ())) & set(body)):  # as a reasoning model refuses them
        return error_response(400, f"Unsupported parameter: '{refused[0]}' is not supported with this model.",
                              "unsupported_parameter")
    if (window := step.get("context_window")) and (used := token_count(prompt_chars(messages))) > int(window):
        return error_response(400, f"This model's maximum context length is {window} tokens. However, your "
                              f"messages resulted in {used} tokens.", "context_length_exceeded")
    if body.get("stream") and "stream" not in step.get("ignore", ()):
        return step
    entry["usage"] = (body := completion_body(model, step, index, messages))["usage"]  # what the provider "charged"
    return web.json_response(body)


async def _stream(request: web.Request, state: ScriptState, body: dict[str, Any], entry: dict[str, Any],
                  step: Step) -> web.StreamResponse:
    """Send the step's chunks as server-sent events, `stream_delay` apart; a `stream_break` drops the connection
    after that many chunks, as a provider's stream that breaks mid-way (no [DONE])."""
    model, messages, index = entry["model"], entry["messages"], entry["step"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    sent = chunks(model, step, index, messages, include_usage)
    broken = state.take_error(model, messages, index, step, "stream_break")
    delay = float(step.get("stream_delay") or 0)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    entry.update(status=200, chunk_times=[])
    await response.prepare(request)
    for number, chunk in enumerate(sent):
        if broken and number == int(broken["after"]):
            entry["broken"] = True
            request.transport.close()  # the connection drops mid-answer
            return response
        while (held := step.get("stream_hold")) and number == held["after"] and held["gate"] not in state.open_gates:
            await asyncio.sleep(0.05)
        if delay and number:
            await asyncio.sleep(delay)
        entry["chunk_times"].append(time.time())
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if include_usage:
        entry["usage"] = sent[-1]["usage"]
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _refused(request: web.Request) -> web.Response | None:
    return None if _authorized(request) else error_response(401, "Incorrect API key provided.", "invalid_api_key")


async def scripts_endpoint(request: web.Request) -> web.Response:
    state, model = request.app[STATE_KEY], request.match_info["model"]
    if request.method == "DELETE":
        return web.json_response({"deleted": state.delete_script(model)})
    try:
        state.set_script(model, await request.json())
    except ValueError as exc:
        return error_response(400, str(exc))
    return web.json_response({"ok": True})


async def outage_endpoint(request: web.Request) -> web.Response:
    try:
        until = request.app[STATE_KEY].set_outage(None if request.method == "DELETE" else await request.json())
    except ValueError as exc:
        return error_response(400, str(exc))
    return web.json_response({"until": until})


async def gates_endpoint(request: web.Request) -> web.Response:
    request.app[STATE_KEY].open_gates.add(request.match_info["name"])
    return web.json_response({"ok": True})


async def requests_endpoint(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        request.app[STATE_KEY].clear_requests()
        return web.json_response({"ok": True})
    return web.json_response(request.app[STATE_KEY].requests())


def create_app(state: ScriptState) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)  # long conversations are big requests
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", chat_completions)
    add_routes(app, state.served, state.models, _refused)
    app.router.add_route("*", "/_scripts/{model}", scripts_endpoint)
    app.router.add_route("*", "/_requests", requests_endpoint)
    app.router.add_route("*", "/_outage", outage_endpoint)
    app.router.add_put("/_gates/{name}", gates_endpoint)
    return app


async def serve(state: ScriptState, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner and the bound port (port=0 picks a free one)."""
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


class ScriptedLLMServer:
    """Runs the server on its own event loop in a background thread; usable as a context manager."""

    def __init__(self, scripts: dict[str, list[Step]] | None = None, *, api_key: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, lists_models: bool = True, streams: bool = True):
        self.state = ScriptState(scripts, api_key, lists_models, streams)
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ScriptedLLMServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-llm", daemon=True)
        self._thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(serve(self.state, self.host, self.port), self._loop)
            self._runner, self.port = future.result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._thread = self._loop = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_script(self, model: str, steps: list[Step]) -> None:
        self.state.set_script(model, steps)

    def set_outage(self, error: dict[str, Any] | None) -> float | None:
        return self.state.set_outage(error)

    def open_gate(self, name: str) -> None:
        """Every reply held by `"hold": name` goes ahead, now and from now on."""
        self.state.open_gates.add(name)

    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests()

    def set_unknown_models(self, models: list[str]) -> None:
        self.state.served.set_unknown(models)

    def clear_requests(self) -> None:
        self.state.clear_requests()


def _script_arg(value: str) -> tuple[str, list[Step]]:
    model, sep, path = value.partition("=")
    if not sep or not model or not path:
        raise argparse.ArgumentTypeError(f"expected MODEL=PATH, got {value!r}")
    try:
        return model, load_script(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise argparse.ArgumentTypeError(f"cannot load script {path}: {exc}") from exc


async def _serve_forever(state: ScriptState, host: str, port: int) -> None:
    runner, bound_port = await serve(state, host, port)
    print(f"listening on http://{host}:{bound_port}/v1", flush=True)  # readiness signal for parents
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible LLM server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--script", type=_script_arg, action="append", default=[],
                        metavar="MODEL=PATH", help="YAML/JSON list of steps for MODEL (repeatable)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--no-models-endpoint", action="store_true", help="no /v1/models (nor /v1/models/{model})")
    parser.add_argument("--no-stream", action="store_true", help="refuse `stream: true` (400)")
    args = parser.parse_args(argv)
    state = ScriptState(dict(args.script), args.api_key, not args.no_models_endpoint, not args.no_stream)
    try:
        asyncio.run(_serve_forever(state, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
