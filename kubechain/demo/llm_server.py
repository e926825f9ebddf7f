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
    "finish_reason": "length"                          # as if cut off at the token limit
    "refuse": ["max_tokens", "temperature"]            # 400 unsupported_parameter, as reasoning models do
    "context_window": 6000                             # 400 context_length_exceeded past this many prompt tokens
    "error": {"status": 429, "times": 2}               # first 2 hits of this step, per conversation,
                                                       # fail with that status, then reply normally
                                                       # (optional "message", "code", and what a provider
                                                       # says to wait: "retry_after" seconds, "retry_after_date"
                                                       # seconds from now as an HTTP-date, "retry_after_ms")

A conversation is identified by (model, contents of its first two messages). Default tool call ids
are ``call_<step>_<index>``. Models without a script (and ``demo``) get a small rule-based
behaviour: call ``calculator`` for arithmetic, ``current_time`` when asked for the time, then
answer "The answer is <tool result>.", otherwise echo "You said: <text>".

Usage is deterministic: prompt_tokens = max(1, chars of message contents and tool call arguments
// 4), completion_tokens = max(1, chars of reply content and tool call arguments // 4).

Control API (no auth): ``PUT/DELETE /_scripts/{model}``, ``GET/DELETE /_requests``, ``GET/PUT /_models``
(models declared unknown: kubechain/demo/models.py), and a server-wide outage: ``PUT /_outage``
``{"status": 503, "seconds": 300}`` (optional "message", "code", "retry_after"...) fails every chat request with
that error for that long (``DELETE`` ends it sooner; ``ScriptedLLMServer.set_outage``).
CLI: ``python -m kubechain.demo.llm_server --port 8000 [--script model=steps.yaml] [--api-key K]
[--no-models-endpoint]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import threading
import time
import uuid
from collections import deque
from email.utils import formatdate
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .models import ServedModels, add_routes, model_not_found
from .rules import content_text, demo_step, last_content, summary_step

DEMO_MODEL = "demo"
DEFAULT_ID = re.compile(r"^call_(\d+)_\d+$")
MAX_RECORDED_REQUESTS = 10_000
_STEP_KEYS = {"content", "tool_calls", "latency", "error", "finish_reason", "refuse", "context_window"}

Step = dict[str, Any]
Message = dict[str, Any]


def validate_steps(steps: Any) -> list[Step]:
    """Fail loudly on malformed scripts: a typo should break the test, not silently echo."""
    if not isinstance(steps, list) or not steps:
        raise ValueError("a script must be a non-empty list of steps")
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ValueError(f"step {i} must be a mapping")
        if unknown := set(step) - _STEP_KEYS:
            raise ValueError(f"step {i} has unknown keys {sorted(unknown)}")
        if "content" not in step and "tool_calls" not in step:
            raise ValueError(f"step {i} needs 'content' or 'tool_calls'")
        if any(not isinstance(c, dict) or "name" not in c for c in step.get("tool_calls") or []):
            raise ValueError(f"step {i}: every tool call needs a 'name'")
        error = step.get("error")
        if error is not None and not (isinstance(error, dict) and "status" in error):
            raise ValueError(f"step {i}: 'error' needs a 'status'")
    return steps


def load_script(path: str | Path) -> list[Step]:
    return validate_steps(yaml.safe_load(Path(path).read_text()))  # YAML also parses JSON


def prompt_chars(messages: list[Message]) -> int:
    total = 0
    for message in messages:
        total += len(content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):  # junk from a client must not turn into a 500
                total += len(str((call.get("function") or {}).get("arguments", "")))
    return total


def token_count(chars: int) -> int:
    return max(1, chars // 4)


def step_index(messages: list[Message]) -> int:
    """The assistant turns so far: counted, or read from the default call ids (`call_<step>_<i>`) of the latest
    ones when a compacted conversation no longer shows every turn."""
    ids = [DEFAULT_ID.match(str(c.get("id", ""))) for m in messages if m.get("role") == "assistant"
           for c in m.get("tool_calls") or () if isinstance(c, dict)]
    return max([sum(1 for m in messages if m.get("role") == "assistant")] + [int(i[1]) + 1 for i in ids if i])


def conversation_key(model: str, messages: list[Message]) -> str:
    head = [content_text(m.get("content")) for m in messages[:2]]
    return hashlib.sha256(json.dumps([model, head]).encode()).hexdigest()


def offered_tools(body: dict[str, Any]) -> list[str]:
    return [str((t.get("function") or {}).get("name", ""))
            for t in body.get("tools") or [] if isinstance(t, dict)]


def render_tool_calls(step: Step, index: int) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(step.get("tool_calls") or []):
        args = call.get("arguments", {})
        calls.append({"id": call.get("id") or f"call_{index}_{i}", "type": "function",
                      "function": {"name": call["name"],
                                   "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return calls


def completion_body(model: str, step: Step, index: int, messages: list[Message]) -> dict[str, Any]:
    content = step.get("content")
    if content is not None:  # str.replace, not format(): scripted text may contain braces
        content = str(content).replace("{last_tool_result}", last_content(messages, "tool") or "")
    tool_calls = render_tool_calls(step, index)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    reply_chars = len(content or "") + sum(len(c["function"]["arguments"]) for c in tool_calls)
    prompt, completion = token_count(prompt_chars(messages)), token_count(reply_chars)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": step.get("finish_reason") or ("tool_calls" if tool_calls else "stop")}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


def error_response(status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    error_type = ("rate_limit_error" if status == 429 else
                  "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code or error_type}}
    return web.json_response(body, status=status, headers=headers)


def retry_headers(error: dict[str, Any]) -> dict[str, str]:
    """What the provider says to wait, as real providers say it (none unless the script asks)."""
    dated = {"retry-after": formatdate(time.time() + float(error["retry_after_date"]), usegmt=True)} \
        if "retry_after_date" in error else {}
    return {**({"retry-after": str(error["retry_after"])} if "retry_after" in error else {}), **dated,
            **({"retry-after-ms": str(error["retry_after_ms"])} if "retry_after_ms" in error else {})}


class ScriptState:
    """Scripts, injected-error budgets and the request log; shared by the loop and test threads."""

    def __init__(self, scripts: dict[str, list[Step]] | None = None, api_key: str | None = None,
                 lists_models: bool = True):
        self.api_key = api_key
        self.served = ServedModels(lists_models)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Step]] = {}
        self._errors_served: dict[tuple[str, str, int], int] = {}
        self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.outage: tuple[float, dict[str, Any]] | None = None  # (until, error): PUT /_outage
        for model, steps in (scripts or {}).items():
            self.set_script(model, steps)

    def set_script(self, model: str, steps: list[Step]) -> None:
        steps = list(validate_steps(steps))
        with self._lock:
            self._scripts[model] = steps
            self._forget_errors(model)  # a new script gets a fresh error budget

    def delete_script(self, model: str) -> bool:
        with self._lock:
            self._forget_errors(model)
            return self._scripts.pop(model, None) is not None

    def _forget_errors(self, model: str) -> None:
        for key in [k for k in self._errors_served if k[0] == model]:
            del self._errors_served[key]

    def models(self) -> list[str]:
        with self._lock:
            return sorted(set(self._scripts) | {DEMO_MODEL})

    def step_for(self, model: str, messages: list[Message], tools: list[str], index: int) -> Step:
        with self._lock:
            script = self._scripts.get(model)
        if not script:
            return demo_step(messages, tools)
        return script[min(index, len(script) - 1)]

    def take_error(self, model: str, messages: list[Message], index: int, step: Step) -> dict | None:
        """Return the step's error if this conversation has not yet used up its budget."""
        error = step.get("error")
        if not error:
            return None
        key = (model, conversation_key(model, messages), index)
        with self._lock:
            served = self._errors_served.get(key, 0)
            if served >= int(error.get("times", 1)):
                return None
            self._errors_served[key] = served + 1
        return error

    def set_outage(self, error: dict[str, Any] | None) -> float | None:
        """Every chat request fails with `error` for error["seconds"] from now (None: ends it); returns its end."""
        if error is not None and not (isinstance(error, dict) and {"status", "seconds"} <= set(error)):
            raise ValueError("an outage needs a 'status' and 'seconds'")
        self.outage = (time.time() + float(error["seconds"]), error) if error else None  # one atomic swap
        return self.outage[0] if self.outage else None

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._requests.append(entry)
        return entry

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()


STATE_KEY = web.AppKey("state", ScriptState)
PLAIN = {"model", "messages", "tools"}  # the rest of a request body is logged as its "params"


def _authorized(request: web.Request) -> bool:
    key = request.app[STATE_KEY].api_key
    return key is None or request.headers.get("Authorization") == f"Bearer {key}"


async def chat_completions(request: web.Request) -> web.Response:
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
    entry["status"] = response.status  # the entry was recorded on arrival so in-flight requests show
    return response


async def _reply(state: ScriptState, body: dict[str, Any], entry: dict[str, Any],
                 authorized: bool) -> web.Response:
    if not authorized:
        return error_response(401, "Incorrect API key provided.", "invalid_api_key")
    if body.get("stream"):
        return error_response(400, "stream=true is not supported by the scripted server.", "unsupported_parameter")
    if (outage := state.outage) and time.time() < outage[0]:
        return error_response(int(outage[1]["status"]), outage[1].get("message", "Scripted outage."),
                              outage[1].get("code"), headers=retry_headers(outage[1]))
    model, messages, index = entry["model"], entry["messages"], entry["step"]
    if not state.served.serves(model):
        return model_not_found(model)
    step = summary_step(messages) or state.step_for(model, messages, entry["tools"], index)
    error = state.take_error(model, messages, index, step)
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
    entry["usage"] = (body := completion_body(model, step, index, messages))["usage"]  # what the provider "charged"
    return web.json_response(body)


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
                 host: str = "127.0.0.1", port: int = 0, lists_models: bool = True):
        self.state = ScriptState(scripts, api_key, lists_models)
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
    args = parser.parse_args(argv)
    state = ScriptState(dict(args.script), args.api_key, not args.no_models_endpoint)
    try:
        asyncio.run(_serve_forever(state, args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
