"""LLM: how to reach a chat-completions model (OpenAI or any OpenAI-compatible server)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import AGE, READY_COLUMNS, KindInfo, Model, PrinterColumn, ReadyStatus, SecretKeyRef


class LLMSpec(Model):
    provider: Literal["openai"] = Field(
        default="openai",
        description="API flavour. `openai` speaks the OpenAI chat-completions API; with `baseURL` it reaches any "
                    "OpenAI-compatible server (vLLM, Ollama, LiteLLM, ...).")
    base_url: str | None = Field(
        default=None, alias="baseURL", pattern=r"^https?://",
        description="Base URL of an OpenAI-compatible API, e.g. http://vllm:8000/v1. Empty means api.openai.com.")
    model: str = Field(min_length=1, description="Model name sent with every request, e.g. gpt-4o-mini.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the API key. Optional for servers that need none. The key is never "
                    "written to status, events or logs.")
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(default=4096, ge=1, description="Upper bound of completion tokens per request.")
    request_timeout_seconds: float = Field(default=120, gt=0, description="Timeout of one LLM request, in seconds.")
    max_retries: int = Field(default=2, ge=0, le=20,
                             description="Retries of a failed request (connection errors, 408/409/429/5xx) with backoff.")


class LLMStatus(ReadyStatus):
    pass


KIND = KindInfo(
    kind="LLM", plural="llms", singular="llm", spec=LLMSpec, status=LLMStatus, short_names=("llm",),
    description="An LLM endpoint and model that agents talk to.",
    columns=(PrinterColumn("Provider", ".spec.provider"), PrinterColumn("Model", ".spec.model"),
             *READY_COLUMNS, AGE),
)
