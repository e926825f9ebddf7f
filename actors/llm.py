"""LLMClient: one chat-completions request. OpenAIChatClient talks to any OpenAI-compatible server.

It asks with `stream: true` (and `stream_options.include_usage`), hands each delta to the run's LiveStream as it
arrives (actors/livestream.py: readers see the answer forming) and returns the same reply a whole answer would
have given: the checkpoint cannot tell them apart. A server (or model) that refuses streaming with a 400 naming
`stream` is asked again at once for the whole message, and never streamed again by this client; so is one that
ignores `stream` and answers the whole message as JSON. A stream that breaks mid-way is a failed request like any
other (retryable, "Unreachable"): the run's retries ask it again.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from kubechain.api.v1alpha1 import FunctionCall, LLMSpec, Message, Reason, ToolCall, Usage

from .livestream import LiveStream


@dataclass(frozen=True)
class LLMReply:
    message: Message
    usage: Usage
    finish_reason: str = "stop"  # "length": cut off at the token limit


class LLMError(Exception):
    """A request the LLM did not answer. `retryable`: asking again may work (429, 408, 409, 5xx, no answer);
    `reason`: why, as the TaskRun says it; `retry_after`: the seconds the provider asked to wait, if it said."""

    def __init__(self, message: str, *, retryable: bool = False, reason: Reason = Reason.LLM_ERROR,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable, self.reason, self.retry_after = retryable, reason, retry_after
        self.refused_streaming = False  # a 400 naming `stream`: ask again without


def http_error(status: int, message: str, headers: Mapping[str, str], now: datetime, code: str | None = None) -> LLMError:
    """What an HTTP error from the provider means for the run: retried (rate limits, outages), compacted (the
    conversation outgrew the window: OpenAI's code, or vLLM's and others' wording) or final."""
    if status == 400 and (code == "context_length_exceeded" or "maximum context length" in message):
        return LLMError(message, reason=Reason.CONTEXT_LENGTH_EXCEEDED)
    if status == 429:
        return LLMError(message, retryable=True, reason=Reason.RATE_LIMITED, retry_after=retry_after(headers, now))
    if status in (408, 409) or status >= 500:
        return LLMError(message, retryable=True, reason=Reason.SERVER_ERROR, retry_after=retry_after(headers, now))
    if status in (401, 403):
        return LLMError(message, reason=Reason.UNAUTHORIZED)
    if status == 404:
        return LLMError(message, reason=Reason.MODEL_NOT_FOUND)
    return LLMError(message, reason=Reason.LLM_REJECTED)


def retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait as the provider says: `retry-after-ms`, or `retry-after` in seconds or as an HTTP-date."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        if (ms := lower.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        if (value := lower.get("retry-after")) is None:
            return None
        if value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (ValueError, TypeError, OverflowError):
        return None  # unreadable: the run's own back-off applies


class LLMClient(Protocol):
    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LLMReply: ...


def streaming_refused(status: int, message: str) -> bool:
    """A 400 that names streaming: the server or the model does not stream (ask for the whole message instead)."""
    return status == 400 and "stream" in message.lower()


class OpenAIChatClient:
    def __init__(self, spec: LLMSpec, api_key: str | None, live: LiveStream | None = None):
        import openai  # heavy (~0.8 s): imported where it is used, so importing this module stays cheap

        from openai.types.chat import ChatCompletion

        self._openai, self._completion = openai, ChatCompletion
        self._live = live
        self.streams = live is not None  # until a server refuses it
        self._spec = spec
        # Servers without auth (Ollama, vLLM) still need a non-empty key for the SDK.
        self._client = openai.AsyncOpenAI(base_url=spec.base_url, api_key=api_key or "unused",
                                          timeout=spec.request_timeout_seconds, max_retries=spec.max_retries)

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LLMReply:
        body = request_body(self._spec, messages, tools)
        if self.streams:
            try:
                return await self._streamed(body)
            except LLMError as exc:
                if not exc.refused_streaming:
                    raise
                self.streams = False  # then the whole message, now and for the rest of the run
        return await self._whole(body)

    async def _streamed(self, body: dict[str, Any]) -> LLMReply:
        from .streamed import StreamedReply  # it builds this module's LLMReply

        assert self._live is not None
        reply = StreamedReply()
        try:
            stream = await self._client.post(
                "/chat/completions", body={**body, "stream": True, "stream_options": {"include_usage": True}},
                cast_to=object, stream=True, stream_cls=self._openai.AsyncStream[object])  # chunks as dicts
            try:
                if not stream.response.headers.get("content-type", "").startswith("text/event-stream"):
                    self.streams = False  # it ignores `stream: true`: the whole message, now and for the rest
                    return self._reply(self._completion.model_validate_json(await stream.response.aread()))
                async for chunk in sse_chunks(stream.response):
                    for delta in reply.add(chunk):
                        self._live.add(delta)
            finally:
                await stream.response.aclose()
        except self._openai.APIStatusError as exc:
            error = http_error(exc.status_code, f"{type(exc).__name__}: {exc}", exc.response.headers,
                               datetime.now(timezone.utc), exc.code)
            error.refused_streaming = streaming_refused(exc.status_code, str(exc))
            raise error from None
        except (self._openai.APIConnectionError, _transport_error()) as exc:  # no answer, or the stream broke mid-way
            raise LLMError(f"{type(exc).__name__}: {exc}", retryable=True, reason=Reason.UNREACHABLE) from None
        except self._openai.APIError as exc:
            raise LLMError(f"{type(exc).__name__}: {exc}", retryable=True, reason=Reason.SERVER_ERROR) from None
        except ValueError as exc:  # a chunk that is not JSON: the stream is broken
            raise LLMError(f"the LLM's stream sent an unreadable chunk: {exc}", retryable=True,
                           reason=Reason.SERVER_ERROR) from None
        return reply.result()

    async def _whole(self, body: dict[str, Any]) -> LLMReply:
        try:
            # The SDK's own request path (auth, retries, errors, response types) without `chat.completions.create`'s
            # recursive re-typing of the whole conversation: that costs O(context) per step (3 ms at 100 messages,
            # 40 ms at 1,000) for messages that are already in wire form.
            response = await self._client.post("/chat/completions", body=body, cast_to=self._completion)
        except self._openai.APIStatusError as exc:  # the provider answered with an error
            raise http_error(exc.status_code, f"{type(exc).__name__}: {exc}", exc.response.headers,
                             datetime.now(timezone.utc), exc.code) from None
        except self._openai.APIConnectionError as exc:  # no answer (timeouts included)
            raise LLMError(f"{type(exc).__name__}: {exc}", retryable=True, reason=Reason.UNREACHABLE) from None
        except self._openai.APIError as exc:
            raise LLMError(f"{type(exc).__name__}: {exc}") from None
        return self._reply(response)

    def _reply(self, response: Any) -> LLMReply:
        if not response.choices:
            raise LLMError("the LLM returned no choices")
        choice = response.choices[0]
        return LLMReply(message=_message(choice.message), usage=_usage(response.usage),
                        finish_reason=choice.finish_reason or "stop")

    async def close(self) -> None:
        await self._client.close()


def request_body(spec: LLMSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """What is set, as providers take it: unset parameters are not sent (a reasoning model refuses a temperature
    or `max_tokens`); extraBody's fields go first, so they can never replace the run's own."""
    body: dict[str, Any] = {**(spec.extra_body or {}), "model": spec.model, "messages": messages}
    for key, value in (("temperature", spec.temperature), ("max_tokens", spec.max_tokens),
                       ("max_completion_tokens", spec.max_completion_tokens), ("tools", tools or None)):
        if value is not None:
            body[key] = value
    return body


async def sse_chunks(response: Any):
    """The JSON chunks of a server-sent event stream, read off the SDK's HTTP response: the SDK's own stream decoder
    and typing cost ~1 ms per chunk, which a long answer pays per token. An error event (or a chunk holding an
    `error`, as OpenAI sends one mid-stream) is a failed request."""
    import json

    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            if data.startswith("[DONE]"):
                return
            chunk = json.loads(data)
            if event == "error" or (isinstance(chunk, dict) and chunk.get("error")):
                error = chunk.get("error") if isinstance(chunk, dict) else None
                message = error.get("message") if isinstance(error, dict) else None
                raise LLMError(f"the stream failed: {message or data[:300]}", retryable=True,
                               reason=Reason.SERVER_ERROR)
            if isinstance(chunk, dict):
                yield chunk
        elif not line:
            event = ""


def _transport_error() -> type[Exception]:
    """The SDK's HTTP library's base error (a stream broken mid-way surfaces as one): httpx, or httpx2 in the
    SDK's newer releases; whichever the installed SDK imports."""
    from openai import _base_client

    for name in ("httpx2", "httpx"):
        if (module := getattr(_base_client, name, None)) is not None:
            return module.HTTPError
    return OSError


def _message(msg: Any) -> Message:
    calls = [ToolCall(id=c.id, function=FunctionCall(name=c.function.name, arguments=c.function.arguments or ""))
             for c in (msg.tool_calls or []) if getattr(c, "function", None) is not None]
    return Message(role="assistant", content=msg.content, tool_calls=calls or None)


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)  # OpenAI's; absent from many compatible servers
    return Usage(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0,
                 total_tokens=usage.total_tokens or 0, cached_prompt_tokens=getattr(details, "cached_tokens", 0) or 0)
