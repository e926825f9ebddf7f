"""LLMClient: one chat-completions request. OpenAIChatClient talks to any OpenAI-compatible server."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kubechain.api.v1alpha1 import FunctionCall, LLMSpec, Message, ToolCall, Usage


@dataclass(frozen=True)
class LLMReply:
    message: Message
    usage: Usage


class LLMError(Exception):
    """The LLM could not answer, after the SDK's own retries."""


class LLMClient(Protocol):
    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LLMReply: ...


class OpenAIChatClient:
    def __init__(self, spec: LLMSpec, api_key: str | None):
        import openai  # heavy (~0.8 s): imported where it is used, so importing this module stays cheap

        from openai.types.chat import ChatCompletion

        self._openai, self._completion = openai, ChatCompletion
        self._spec = spec
        # Servers without auth (Ollama, vLLM) still need a non-empty key for the SDK.
        self._client = openai.AsyncOpenAI(base_url=spec.base_url, api_key=api_key or "unused",
                                          timeout=spec.request_timeout_seconds, max_retries=spec.max_retries)

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LLMReply:
        body: dict[str, Any] = {"model": self._spec.model, "messages": messages}
        for key, value in (("temperature", self._spec.temperature), ("max_tokens", self._spec.max_tokens),
                           ("tools", tools or None)):
            if value is not None:
                body[key] = value
        try:
            # The SDK's own request path (auth, retries, errors, response types) without `chat.completions.create`'s
            # recursive re-typing of the whole conversation: that costs O(context) per step (3 ms at 100 messages,
            # 40 ms at 1,000) for messages that are already in wire form.
            response = await self._client.post("/chat/completions", body=body, cast_to=self._completion)
        except self._openai.APIError as exc:
            raise LLMError(f"{type(exc).__name__}: {exc}") from None
        if not response.choices:
            raise LLMError("the LLM returned no choices")
        return LLMReply(message=_message(response.choices[0].message), usage=_usage(response.usage))

    async def close(self) -> None:
        await self._client.close()


def _message(msg: Any) -> Message:
    calls = [ToolCall(id=c.id, function=FunctionCall(name=c.function.name, arguments=c.function.arguments or ""))
             for c in (msg.tool_calls or []) if getattr(c, "function", None) is not None]
    return Message(role="assistant", content=msg.content, tool_calls=calls or None)


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0,
                 total_tokens=usage.total_tokens or 0)
