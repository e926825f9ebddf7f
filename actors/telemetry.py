"""What an actor reports about its run: spans (OpenTelemetry) and metrics (Ray's metrics agent).

Spans join the run's trace (RunSpec.traceparent): one per step, with the LLM call and each tool call
inside it. Metrics use `ray.util.metrics`, so Ray's metrics agent on each node exports them with the
rest of the cluster's metrics (as `ray_kubechain_*`) and the operator does not aggregate anything.
Without an exporter configured the spans are no-ops; `NoMetrics` stands in where Ray is absent (unit tests).
"""
from __future__ import annotations

import time
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Iterator, Protocol

from kubechain.api.v1alpha1 import Pricing, Usage
from kubechain.runtime.tracing import span_in, tracer

TRACER = tracer("kubechain.actor")
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]


class Metrics(Protocol):
    def llm_request(self, model: str, seconds: float, usage: Usage, ok: bool, namespace: str = "",
                    cost: tuple[float, str] | None = None) -> None: ...
    def tool_call(self, tool: str, outcome: str) -> None: ...
    def checkpoint(self, seconds: float) -> None: ...


class NoMetrics:
    def llm_request(self, model: str, seconds: float, usage: Usage, ok: bool, namespace: str = "",
                    cost: tuple[float, str] | None = None) -> None:
        pass

    def tool_call(self, tool: str, outcome: str) -> None:
        pass

    def checkpoint(self, seconds: float) -> None:
        pass


class RayMetrics:
    """The metric objects, created once per worker process (Ray registers them with its agent)."""

    _instance: "RayMetrics | None" = None

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Histogram

        self.llm_seconds = Histogram("kubechain_llm_request_seconds", "LLM request latency, by model and outcome.",
                                     boundaries=LATENCY_BUCKETS, tag_keys=("model", "outcome"))
        self.tokens = Counter("kubechain_llm_tokens_total", "Tokens used, by namespace, model and type "
                              "(prompt|completion).", tag_keys=("namespace", "model", "type"))
        self.cost = Counter("kubechain_llm_cost_total", "What LLM requests cost (LLM.spec.pricing), by namespace, model "
                            "and currency.", tag_keys=("namespace", "model", "currency"))
        self.tools = Counter("kubechain_tool_calls_total", "Tool calls, by tool and outcome.", tag_keys=("tool", "outcome"))
        self.checkpoints = Histogram("kubechain_checkpoint_write_seconds", "Checkpoint (status) write latency.",
                                     boundaries=LATENCY_BUCKETS)

    @classmethod
    def get(cls) -> "RayMetrics":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def llm_request(self, model: str, seconds: float, usage: Usage, ok: bool, namespace: str = "",
                    cost: tuple[float, str] | None = None) -> None:
        self.llm_seconds.observe(seconds, tags={"model": model, "outcome": "ok" if ok else "error"})
        for kind, tokens in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)):
            if tokens:
                self.tokens.inc(tokens, tags={"namespace": namespace, "model": model, "type": kind})
        if cost is not None and cost[0] > 0:
            self.cost.inc(cost[0], tags={"namespace": namespace, "model": model, "currency": cost[1]})

    def tool_call(self, tool: str, outcome: str) -> None:
        self.tools.inc(1, tags={"tool": tool, "outcome": outcome})

    def checkpoint(self, seconds: float) -> None:
        self.checkpoints.observe(seconds)


class RunTelemetry:
    def __init__(self, traceparent: str | None = None, metrics: Metrics | None = None, **attributes: Any):
        self.traceparent, self.metrics, self.attributes = traceparent, metrics or NoMetrics(), attributes

    @contextmanager
    def step(self, number: int) -> Iterator[Any]:
        with span_in(self.traceparent, TRACER, f"step {number}", **self.attributes, **{"kubechain.step": number}) as span:
            yield span

    @asynccontextmanager
    async def llm_call(self, model: str, pricing: Pricing | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yields a dict: set `usage` (and `ok`) in it before the block ends."""
        outcome: dict[str, Any] = {"usage": Usage(), "ok": False}
        started = time.perf_counter()
        with TRACER.start_as_current_span(f"chat {model}", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": model}) as span:
            try:
                yield outcome
            finally:
                usage: Usage = outcome["usage"]
                span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
                cost = (pricing.cost(usage), pricing.currency) if pricing is not None else None
                self.metrics.llm_request(model, time.perf_counter() - started, usage, outcome["ok"],
                                         self.attributes.get("k8s.namespace.name", ""), cost)

    @contextmanager
    def tool_call(self, tool: str, call_id: str) -> Iterator[dict[str, Any]]:
        """Yields a dict: set `outcome` (succeeded|failed) in it before the block ends. (The tool-call metric is
        counted when the call's outcome is journaled, so answers and child results count too.)"""
        result: dict[str, Any] = {"outcome": "unknown"}
        with TRACER.start_as_current_span(f"execute_tool {tool}", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.call.id": call_id}) as span:
            try:
                yield result
            finally:
                span.set_attribute("kubechain.tool.outcome", result["outcome"])

    @asynccontextmanager
    async def checkpoint(self) -> AsyncIterator[None]:
        started = time.perf_counter()
        with TRACER.start_as_current_span("checkpoint"):
            yield
        self.metrics.checkpoint(time.perf_counter() - started)
