"""What the scripted server answers: a whole chat completion, an OpenAI-shaped error, and the deterministic
token counts both use (usage: max(1, characters // 4) of the prompt's and of the reply's text)."""
from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from email.utils import formatdate
from typing import Any

from aiohttp import web

from .rules import content_text, last_content

DEFAULT_ID = re.compile(r"^call_(\d+)_\d+$")

Step = dict[str, Any]
Message = dict[str, Any]


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


def reply_content(step: Step, messages: list[Message]) -> str | None:
    content = step.get("content")
    if content is not None:  # str.replace, not format(): scripted text may contain braces
        content = str(content).replace("{last_tool_result}", last_content(messages, "tool") or "")
    return content


def finish_reason(step: Step, tool_calls: list[dict[str, Any]]) -> str:
    return step.get("finish_reason") or ("tool_calls" if tool_calls else "stop")


def usage(messages: list[Message], content: str | None, tool_calls: list[dict[str, Any]]) -> dict[str, int]:
    reply_chars = len(content or "") + sum(len(c["function"]["arguments"]) for c in tool_calls)
    prompt, completion = token_count(prompt_chars(messages)), token_count(reply_chars)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(model: str, step: Step, index: int, messages: list[Message]) -> dict[str, Any]:
    content, tool_calls = reply_content(step, messages), render_tool_calls(step, index)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(step, tool_calls)}],
        "usage": usage(messages, content, tool_calls),
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


