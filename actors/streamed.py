"""A streamed answer put together from its chunks: the deltas for the run's LiveStream as they come, and at the end
the same LLMReply the whole answer would have given (so what the checkpoint records does not depend on streaming).

The chunks are OpenAI's (`chat.completion.chunk`), as plain dicts: the SDK's typing of each chunk costs ~1 ms, which
a long answer (or a long tool argument, tens of thousands of chunks) would pay per token. Content deltas; tool calls by `index`, their `id` and
`function.name` in the first delta of each, `function.arguments` in fragments; the `finish_reason` in the last
choice chunk; with `stream_options.include_usage`, the usage in a chunk with no choices. A stream that ends without a
finish_reason was cut off: a failed request (retried), never a reply.
"""
from __future__ import annotations

from typing import Any

from kubechain.api.v1alpha1 import FunctionCall, Message, Reason, ToolCall
from kubechain.core.livestream import Delta

from .llm import LLMError, LLMReply, _usage


class StreamedReply:
    def __init__(self) -> None:
        self._content: list[str] = []
        self._has_content = False  # a content delta came, even "": the whole answer's content is "" then, not null
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self._finish: str | None = None
        self._usage: Any = None

    def add(self, chunk: dict[str, Any]) -> list[Delta]:
        """The chunk's deltas, for readers of the live stream."""
        out: list[Delta] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never asked for
            delta = choice.get("delta") or {}
            if (content := delta.get("content")) is not None:
                self._has_content = True
                if content:
                    self._content.append(content)
                    out.append({"c": content})
            for call in delta.get("tool_calls") or ():
                out.append(self._call(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        if (usage := chunk.get("usage")) is not None:
            self._usage = usage
            out.append({"u": {"prompt": usage.get("prompt_tokens") or 0,
                              "completion": usage.get("completion_tokens") or 0}})
        return out

    def _call(self, call: dict[str, Any]) -> Delta:
        index = int(call.get("index", 0))
        formed = self._calls.setdefault(index, ["", "", ""])
        delta: Delta = {"t": index}
        if call.get("id"):
            formed[0] = delta["id"] = call["id"]
        function = call.get("function") or {}
        if function.get("name") and not formed[1]:
            formed[1] = delta["n"] = function["name"]
        if function.get("arguments"):
            formed[2] += function["arguments"]
            delta["a"] = function["arguments"]
        return delta

    def result(self) -> LLMReply:
        if self._finish is None:
            raise LLMError("the LLM's stream ended before its answer did", retryable=True, reason=Reason.UNREACHABLE)
        calls = [ToolCall(id=i, function=FunctionCall(name=name, arguments=arguments))
                 for i, name, arguments in (self._calls[k] for k in sorted(self._calls))]
        content = "".join(self._content) if self._has_content else None
        return LLMReply(message=Message(role="assistant", content=content, tool_calls=calls or None),
                        usage=_usage(_Usage(self._usage) if self._usage else None), finish_reason=self._finish)


class _Usage:
    """A usage dict read as llm._usage reads the SDK's object."""

    def __init__(self, usage: dict[str, Any]):
        self.prompt_tokens = usage.get("prompt_tokens")
        self.completion_tokens = usage.get("completion_tokens")
        self.total_tokens = usage.get("total_tokens")
        details = usage.get("prompt_tokens_details")
        self.prompt_tokens_details = _Usage.Details(details) if isinstance(details, dict) else None

    class Details:
        def __init__(self, details: dict[str, Any]):
            self.cached_tokens = details.get("cached_tokens")
