"""OpenTelemetry tracing for the operator and the actors, configured by the standard OTEL_* variables.

Without OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (or OTEL_TRACES_EXPORTER=otlp|console)
nothing is installed and every span is the API's no-op: tracing costs nothing unless it is asked for.

One trace per TaskRun: the operator starts it when it schedules the run and stores its W3C traceparent
in `status.traceparent`; every later span about the run - operator handlers, each actor step, LLM call and
tool call, after any crash too - is a child of that context. A child TaskRun's trace continues its
parent's (same trace id), so a delegation tree is one trace.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_provider: Any = None


def exporter_requested() -> bool:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "")
    if choice == "none":
        return False
    return choice in ("otlp", "console") or any(
        os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service_name: str) -> bool:
    """Install the SDK with an exporter if the environment asks for one (once per process)."""
    global _provider
    if _provider is not None or not exporter_requested():
        return _provider is not None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        exporter: Any = ConsoleSpanExporter()
    elif "grpc" in os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # optional extra
        exporter = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(_provider)
    return True


def flush(timeout_ms: int = 2000) -> None:
    """Send buffered spans now (an actor process is about to exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a W3C traceparent names (None: start a new trace)."""
    return _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None


def traceparent(span: trace.Span) -> str | None:
    """The W3C traceparent of `span` (None when tracing is off: the span is not recording)."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


@contextmanager
def span_in(parent: str | None, tracer_: trace.Tracer, name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span under the trace `parent` names (a TaskRun's traceparent), current while the block runs."""
    with tracer_.start_as_current_span(name, context=context_of(parent),
                                       attributes={k: v for k, v in attributes.items() if v is not None}) as span:
        yield span
