"""LLMClient: one chat-completions request. OpenAIChatClient talks to any OpenAI-compatible server."""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Mapping, Protocol

from kubechain.api.v1alpha1 import FunctionCall, LLMSpec, Message, ToolCall, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Errors are named and retried as the openai SDK does, so what a failed run reports reads the same.
ERRORS = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError",
          409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError"}
RETRIED = {408, 409, 429}  # and every 5xx
INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, MAX_RETRY_AFTER = 0.5, 8.0, 120.0


@dataclass(frozen=True)
class LLMReply:
    message: Message
    usage: Usage


class LLMError(Exception):
    """The LLM could not answer, after the client's own retries."""


class _Retryable(LLMError):
    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class LLMClient(Protocol):
    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LLMReply: ...


class OpenAIChatClient:
    """POSTs the wire-form messages with aiohttp, retrying as the openai SDK does (connection errors, 408/409/429/5xx;
    Retry-After honoured). Not the SDK: its request path cost ~1.5 ms of the ~15 ms control overhead per step
    (request models, httpx), and importing it ~0.6 s."""

    def __init__(self, spec: LLMSpec, api_key: str | None):
        self._spec = spec
        base = spec.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self._url = base.rstrip("/") + "/chat/completions"
        # Servers without auth (Ollama, vLLM) ignore the key; some proxies insist on the header.
        self._headers = {"Authorization": f"Bearer {api_key or 'unused'}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        self._session: Any = None  # an aiohttp.ClientSession, made in the event loop that uses it

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LLMReply:
        body: dict[str, Any] = {"model": self._spec.model, "messages": messages}
        for key, value in (("temperature", self._spec.temperature), ("max_tokens", self._spec.max_tokens),
                           ("tools", tools or None)):
            if value is not None:
                body[key] = value
        data = json.dumps(body).encode()
        for retry in range(self._spec.max_retries):
            try:
                return await self._attempt(data, retry)
            except _Retryable as exc:
                await asyncio.sleep(exc.delay)
        try:
            return await self._attempt(data, self._spec.max_retries)
        except _Retryable as exc:
            raise LLMError(str(exc)) from None

    async def _attempt(self, data: bytes, retry: int) -> LLMReply:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=True)  # HTTPS_PROXY and friends, as the SDK
        try:
            async with self._session.post(self._url, data=data, headers=self._headers,
                                          timeout=aiohttp.ClientTimeout(total=self._spec.request_timeout_seconds)) as response:
                status, headers, text = response.status, response.headers, await response.text(errors="replace")
        except asyncio.TimeoutError:
            raise _Retryable("APITimeoutError: Request timed out.", _backoff(retry)) from None
        except aiohttp.ClientError as exc:
            raise _Retryable(f"APIConnectionError: Connection error. ({type(exc).__name__}: {exc})",
                             _backoff(retry)) from None
        if status < 300:
            try:
                return _reply(json.loads(text))
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                raise LLMError(f"the LLM returned an unreadable reply ({type(exc).__name__}: {exc})") from None
        name = ERRORS.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
        message = f"{name}: Error code: {status}{_message(text)}"
        after = _retry_after(headers)
        should = headers.get("x-should-retry")
        retried = should == "true" if should in ("true", "false") else status in RETRIED or status >= 500
        if not retried or (after is not None and after > MAX_RETRY_AFTER):
            raise LLMError(message)
        raise _Retryable(message, after if after is not None and after > 0 else _backoff(retry))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _backoff(retry: int) -> float:
    return min(INITIAL_RETRY_DELAY * 2.0 ** retry, MAX_RETRY_DELAY) * (1 - 0.25 * random.random())


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks for (retry-after-ms, or retry-after in seconds or as an HTTP date)."""
    try:
        if ms := headers.get("retry-after-ms"):
            return float(ms) / 1000
        if value := headers.get("retry-after"):
            try:
                seconds = float(value)
            except ValueError:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            return seconds if math.isfinite(seconds) else None
    except (ValueError, TypeError, OverflowError):
        pass
    return None


def _message(text: str) -> str:
    """` - <the error's message>` from an OpenAI-style error body, else nothing."""
    try:
        body = json.loads(text)
    except ValueError:
        return ""
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f" - {message}" if isinstance(message, str) and message else ""


def _reply(completion: dict[str, Any]) -> LLMReply:
    if not completion.get("choices"):
        raise LLMError("the LLM returned no choices")
    msg = completion["choices"][0].get("message") or {}
    calls = [ToolCall(id=c.get("id"), function=FunctionCall(name=c["function"].get("name"),
                                                            arguments=c["function"].get("arguments") or ""))
             for c in (msg.get("tool_calls") or []) if isinstance(c.get("function"), dict)]
    usage = completion.get("usage") or {}
    return LLMReply(message=Message(role="assistant", content=msg.get("content"), tool_calls=calls or None),
                    usage=Usage(prompt_tokens=usage.get("prompt_tokens") or 0,
                                completion_tokens=usage.get("completion_tokens") or 0,
                                total_tokens=usage.get("total_tokens") or 0))
