"""`stream: true` answers, as OpenAI sends them (server-sent events of `chat.completion.chunk` objects).

The order and shapes are OpenAI's (and what the openai SDK's `ChatCompletionChunk` parses):
1. a first chunk whose delta carries the role (`{"role": "assistant", "content": ""}`; for a reply of only tool
   calls, `content: null` and the first call's opening);
2. content deltas (`{"content": "..."}`), `stream_chunk` characters each (default 4, about a token, but a longer
   text in at most MAX_PIECES pieces: a test's 100 KB tool argument need not be 25,000 events);
3. per tool call, in order: an opening delta with its `index`, `id`, `type` and `function.name` (arguments ""),
   then argument fragments (`{"index": i, "function": {"arguments": "..."}}`);
4. a last choice chunk with an empty delta and the `finish_reason`;
5. with `stream_options.include_usage`: a chunk with `choices: []` and the `usage` (every earlier chunk then has
   `"usage": null`);
6. `data: [DONE]`.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

from .completions import Message, Step, finish_reason, render_tool_calls, reply_content, usage

DEFAULT_CHUNK_CHARS = 4
MAX_PIECES = 256  # per text, unless the step sets stream_chunk


def _pieces(text: str, size: int | None) -> Iterator[str]:
    size = size or max(DEFAULT_CHUNK_CHARS, -(-len(text) // MAX_PIECES))
    for start in range(0, len(text), size):
        yield text[start:start + size]


def chunks(model: str, step: Step, index: int, messages: list[Message], include_usage: bool) -> list[dict[str, Any]]:
    """Every chunk of the step's reply, in the order they are sent (without the final `[DONE]`)."""
    size = max(1, int(step["stream_chunk"])) if step.get("stream_chunk") else None
    content, calls = reply_content(step, messages), render_tool_calls(step, index)
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                                "system_fingerprint": None,
                                "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                                      "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return body

    out: list[dict[str, Any]] = []
    if content is not None or not calls:
        out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        out += [chunk({"content": piece}) for piece in _pieces(content or "", size)]
    for i, call in enumerate(calls):
        opening = {"index": i, "id": call["id"], "type": "function",
                   "function": {"name": call["function"]["name"], "arguments": ""}}
        delta: dict[str, Any] = {"tool_calls": [opening]}
        if not out:
            delta = {"role": "assistant", "content": None, **delta}
        out.append(chunk(delta))
        out += [chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                for piece in _pieces(call["function"]["arguments"], size)]
    out.append(chunk({}, finish_reason(step, calls)))
    if include_usage:
        last = chunk(None)
        last["usage"] = usage(messages, content, calls)
        out.append(last)
    return out
