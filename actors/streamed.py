"""A streamed answer put together from its chunks: the deltas for the run's LiveStream as they come, and at the end
the same LLMReply the whole answer would have given (so what the checkpoint records does not depend on streaming).

The chunks are OpenAI's (`chat.completion.chunk`): content deltas; tool calls by `index`, their `id` and
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

    def add(self, chunk: Any) -> list[Delta]:
        """The chunk's deltas, for readers of the live stream."""
        out: list[Delta] = []
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue  # n > 1 is never asked for
            delta = choice.delta
            if delta is not None and delta.content is not None:
                self._has_content = True
                if delta.content:
                    self._content.append(delta.content)
                    out.append({"c": delta.content})
            for call in (delta.tool_calls or ()) if delta is not None else ():
                out.append(self._call(call))
            if choice.finish_reason:
                self._finish = choice.finish_reason
        if getattr(chunk, "usage", None) is not None:
            self._usage = chunk.usage
            out.append({"u": {"prompt": chunk.usage.prompt_tokens or 0,
                              "completion": chunk.usage.completion_tokens or 0}})
        return out

    def _call(self, call: Any) -> Delta:
        formed = self._calls.setdefault(call.index, ["", "", ""])
        delta: Delta = {"t": call.index}
        if call.id:
            formed[0] = delta["id"] = call.id
        function = call.function
        if function is not None and function.name and not formed[1]:
            formed[1] = delta["n"] = function.name
        if function is not None and function.arguments:
            formed[2] += function.arguments
            delta["a"] = function.arguments
        return delta

    def result(self) -> LLMReply:
        if self._finish is None:
            raise LLMError("the LLM's stream ended before its answer did", retryable=True, reason=Reason.UNREACHABLE)
        calls = [ToolCall(id=i, function=FunctionCall(name=name, arguments=arguments))
                 for i, name, arguments in (self._calls[k] for k in sorted(self._calls))]
        content = "".join(self._content) if self._has_content else None
        return LLMReply(message=Message(role="assistant", content=content, tool_calls=calls or None),
                        usage=_usage(self._usage), finish_reason=self._finish)
