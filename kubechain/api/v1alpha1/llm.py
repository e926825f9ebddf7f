"""LLM: how to reach a chat-completions model (OpenAI or any OpenAI-compatible server)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .taskrun import Usage
from .common import AGE, READY_COLUMNS, KindInfo, Model, PrinterColumn, ReadyStatus, SecretKeyRef


# Request fields the run itself sends: a passthrough (extraBody) cannot override them.
RESERVED_FIELDS = frozenset({"model", "messages", "tools", "tool_choice", "stream", "stream_options", "n"})


class Pricing(Model):
    """What the provider charges, so each run records its cost next to its tokens (status.cost; a parent's
    status.treeCost adds its delegated runs')."""

    currency: str = Field(default="USD", min_length=1, max_length=8, description="The currency of the prices "
                          "(a run's cost is in it; trees of runs on LLMs of different currencies are not summed).")
    input_per_million_tokens: float = Field(ge=0, description="Price of a million prompt tokens.")
    output_per_million_tokens: float = Field(ge=0, description="Price of a million completion tokens.")
    cached_input_per_million_tokens: float | None = Field(default=None, ge=0, description="Price of a million "
                                                          "prompt tokens the provider served from its cache "
                                                          "(usage.prompt_tokens_details.cached_tokens); unset: "
                                                          "the input price.")

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
        cached_price = self.input_per_million_tokens if self.cached_input_per_million_tokens is None \
            else self.cached_input_per_million_tokens
        return ((usage.prompt_tokens - cached) * self.input_per_million_tokens + cached * cached_price
                + usage.completion_tokens * self.output_per_million_tokens) / 1_000_000


PRICING = Field(default=None, description="What the provider charges per token: runs record their cost "
                "(status.cost) and Task/TaskRun budgets can cap it (budget.maxCost).")


class RetryPolicy(Model):
    """Retries of a failed LLM request by the run itself: exponential back-off with jitter, or the provider's
    Retry-After. The run stays Running and says so (condition LLMAvailable, status.message, status.llmRetry); a
    wait longer than a few seconds holds no actor process (the operator starts a fresh one at the retry time).
    Requests the provider refuses for good (401/403, an unknown model, other 4xx) fail the run at once."""

    max_elapsed_seconds: int = Field(default=3600, ge=0, description="How long one episode of failures may last "
                                     "(from its first failure) before the run fails with reason LLMError. 0: the "
                                     "first failure fails the run.")
    initial_backoff_seconds: float = Field(default=1.0, gt=0, le=3600, description="Wait after the first failure; "
                                           "it doubles with each failure of the episode (with jitter).")
    max_backoff_seconds: float = Field(default=120.0, gt=0, le=3600, description="Longest wait between two attempts "
                                       "(a longer Retry-After from the provider is honoured).")


MAX_CONCURRENT_RUNS = Field(default=None, ge=1, description="At most this many runs of this LLM are Running at "
                            "once (admission queue); more wait in Pending, reason Queued, naming this limit. Unset: "
                            "no limit of its own. Keeps a fleet of agents from causing its own rate limiting.")
CONTEXT_WINDOW_TOKENS = Field(default=None, ge=256, description="The model's context window, in tokens (prompt and "
                              "completion). Runs of Agents with a context policy compact what the model sees before "
                              "a request would pass it (Agent.spec.context). Unset: unknown; compaction then starts "
                              "only when the provider answers context_length_exceeded.")


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
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature; not sent when "
                                      "unset (reasoning models accept only their default).")
    max_tokens: int | None = Field(default=None, ge=1, description="Upper bound of completion tokens per request, "
                                   "sent as `max_tokens`; not sent when unset. Reasoning models refuse it: use "
                                   "maxCompletionTokens.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Upper bound of completion tokens, "
                                              "reasoning included, sent as `max_completion_tokens` (current OpenAI "
                                              "models); not sent when unset.")
    extra_body: dict[str, Any] | None = Field(default=None, description="Provider-specific request fields sent as "
                                              "they are, e.g. {reasoning_effort: low, top_p: 0.9, seed: 7}. They "
                                              f"cannot set {', '.join(sorted(RESERVED_FIELDS))}.")
    request_timeout_seconds: float = Field(default=120, gt=0, description="Timeout of one LLM request, in seconds.")
    max_retries: int = Field(default=0, ge=0, le=20,
                             description="Immediate retries inside one request by the client library (invisible in "
                                         "status). The run's own `retry` policy is what rides out rate limits and "
                                         "outages; leave this at 0.")
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(), description="How runs ride out the provider's "
                               "rate limits and outages (429, 408, 409, 5xx, connection errors, timeouts).")
    max_concurrent_runs: int | None = MAX_CONCURRENT_RUNS
    context_window_tokens: int | None = CONTEXT_WINDOW_TOKENS
    pricing: Pricing | None = PRICING


    @field_validator("extra_body")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and (taken := sorted(RESERVED_FIELDS & set(value))):
            raise ValueError(f"extraBody cannot set {', '.join(taken)}: kubechain sends them")
        return value


class LLMStatus(ReadyStatus):
    pass


KIND = KindInfo(
    kind="LLM", plural="llms", singular="llm", spec=LLMSpec, status=LLMStatus, short_names=("llm",),
    description="An LLM endpoint and model that agents talk to.",
    columns=(PrinterColumn("Provider", ".spec.provider"), PrinterColumn("Model", ".spec.model"),
             *READY_COLUMNS, AGE),
)
