"""The scripted server's own behaviour for models without a script (and `demo`): call the calculator for
arithmetic, current_time when asked for the time, then answer with the tool's result; else echo."""
from __future__ import annotations

import re
from typing import Any

Message = dict[str, Any]
Step = dict[str, Any]

_ARITHMETIC_RUN = re.compile(r"[\d\s+\-*/().%]+")
_BINARY_OPERATION = re.compile(r"[\d).]\s*(\*\*|[-+*/%])\s*[\d(.]")


def content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):  # multi-part content: only text parts carry characters
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def last_content(messages: list[Message], role: str) -> str | None:
    for message in reversed(messages):
        if message.get("role") == role:
            return content_text(message.get("content"))
    return None


def _balance_parens(expr: str) -> str:
    # Prose like "(what is 2+2)" leaves a dangling bracket on the extracted run.
    while expr.startswith("(") and expr.count("(") > expr.count(")"):
        expr = expr[1:].strip()
    while expr.endswith(")") and expr.count(")") > expr.count("("):
        expr = expr[:-1].strip()
    return expr


def find_expression(text: str) -> str | None:
    candidates = []
    for run in _ARITHMETIC_RUN.findall(text):
        expr = _balance_parens(run.strip().rstrip(".").strip())  # a sentence's full stop
        if _BINARY_OPERATION.search(expr):
            candidates.append(expr)
    return max(candidates, key=len, default=None)


def demo_step(messages: list[Message], tools: list[str]) -> Step:
    tool_result = last_content(messages, "tool")
    if tool_result is not None:
        return {"content": f"The answer is {tool_result}."}
    user_text = last_content(messages, "user") or ""
    if "calculator" in tools and (expr := find_expression(user_text)):
        return {"tool_calls": [{"name": "calculator", "arguments": {"expression": expr}}]}
    if "current_time" in tools and "time" in user_text.lower():
        return {"tool_calls": [{"name": "current_time", "arguments": {}}]}
    return {"content": f"You said: {user_text}"}


def summary_step(messages: list[Message]) -> Step | None:
    """A request for a summary of a conversation (a run compacting its context) is answered as a model would:
    with a summary (here: the start of what it was given), whatever the script says."""
    first = messages[0] if messages else {}
    if first.get("role") != "system" or not content_text(first.get("content")).startswith("Summarise the conversation"):
        return None
    given = content_text(messages[-1].get("content")) if len(messages) > 1 else ""
    return {"content": f"Summary of {given.count(chr(10)) + 1} entries: {given[:300]}"}
