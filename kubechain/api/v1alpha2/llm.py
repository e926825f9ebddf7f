"""LLM (v1alpha2): where the model is, how to authenticate, and how to sample - three groups instead of
one flat list, so credentials can be reviewed (and RBAC'd by policy tools) apart from tuning knobs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from kubechain.api.v1alpha1.common import Model, SecretKeyRef
from kubechain.api.v1alpha1.llm import KIND as V1ALPHA1_KIND
from kubechain.api.v1alpha1.llm import LLMSpec as V1ALPHA1_SPEC
from kubechain.api.v1alpha1.llm import LLMStatus, Pricing, RetryPolicy


class Endpoint(Model):
    base_url: str | None = Field(
        default=None, alias="baseURL", pattern=r"^https?://",
        description="Base URL of an OpenAI-compatible API, e.g. http://vllm:8000/v1. Empty means api.openai.com.")
    request_timeout_seconds: float = Field(default=120, gt=0, description="Timeout of one LLM request, in seconds.")
    max_retries: int = Field(default=0, ge=0, le=20,
                             description="Immediate retries inside one request by the client library (invisible in "
                                         "status). The run's own `retry` policy is what rides out rate limits and "
                                         "outages; leave this at 0.")


class Credentials(Model):
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key. The key is never written to status, events or logs.")


class Parameters(Model):
    temperature: float | None = V1ALPHA1_SPEC.model_fields["temperature"]
    max_tokens: int | None = V1ALPHA1_SPEC.model_fields["max_tokens"]
    max_completion_tokens: int | None = V1ALPHA1_SPEC.model_fields["max_completion_tokens"]
    extra_body: dict[str, Any] | None = V1ALPHA1_SPEC.model_fields["extra_body"]

    _not_reserved = field_validator("extra_body")(V1ALPHA1_SPEC._not_reserved.__func__)


class LLMSpec(Model):
    provider: Literal["openai"] = Field(
        default="openai", description="API flavour: `openai` speaks the OpenAI chat-completions API, and reaches "
                                      "any OpenAI-compatible server through endpoint.baseURL.")
    model: str = Field(min_length=1, description="Model name sent with every request, e.g. gpt-4o-mini.")
    endpoint: Endpoint = Field(default_factory=Endpoint, description="Where the API is and how to call it.")
    credentials: Credentials = Field(default_factory=Credentials, description="How to authenticate (optional for "
                                                                              "servers that need none).")
    parameters: Parameters = Field(default_factory=Parameters, description="Sampling parameters of every request.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="How runs ride out the provider's rate "
                               "limits and outages (429, 408, 409, 5xx, connection errors, timeouts).")
    max_concurrent_runs: int | None = V1ALPHA1_SPEC.model_fields["max_concurrent_runs"]
    context_window_tokens: int | None = V1ALPHA1_SPEC.model_fields["context_window_tokens"]
    pricing: Pricing | None = V1ALPHA1_SPEC.model_fields["pricing"]


KIND = V1ALPHA1_KIND.__class__(**{**V1ALPHA1_KIND.__dict__, "spec": LLMSpec, "status": LLMStatus})
