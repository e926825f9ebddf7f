"""`@observed(kind)`: every kopf handler in a span named `<Kind>.<handler>`, counted and timed.

TaskRun handlers join the run's trace (the traceparent in its status); others start their own.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Awaitable, Callable

from .metrics import RECONCILE_ERRORS, RECONCILE_SECONDS, RECONCILIATIONS
from kubechain.runtime.tracing import span_in, tracer

TRACER = tracer("kubechain.operator")
Handler = Callable[..., Awaitable[Any]]


def observed(kind: str) -> Callable[[Handler], Handler]:
    def decorate(fn: Handler) -> Handler:
        name, labels = f"{kind}.{fn.__name__}", (kind, fn.__name__)

        @functools.wraps(fn)
        async def handler(**kwargs: Any) -> Any:
            status, spec = kwargs.get("status") or {}, kwargs.get("spec") or {}
            parent = status.get("traceparent") or (spec.get("parent") or {}).get("traceparent")  # a child run's first
            started = time.perf_counter()
            with span_in(parent, TRACER, name, **{
                    "k8s.namespace.name": kwargs.get("namespace"), "kubechain.kind": kind,
                    "kubechain.name": kwargs.get("name"), "kubechain.event": kwargs.get("type")}):
                try:
                    return await fn(**kwargs)
                except Exception:
                    RECONCILE_ERRORS.labels(*labels).inc()
                    raise
                finally:
                    RECONCILIATIONS.labels(*labels).inc()
                    RECONCILE_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        return handler
    return decorate
