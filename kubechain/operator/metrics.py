"""The operator's Prometheus metrics, served on /metrics (KUBECHAIN_METRICS_PORT, default 8080).

Actor-side metrics (LLM latency, tokens, tool calls, checkpoint writes) are recorded in the actors with
`ray.util.metrics` and exported by Ray's own metrics agent (see actors/telemetry.py): they live where the
work happens, are scraped with the rest of the Ray cluster (KubeRay's PodMonitor / Ray's Grafana), and
survive operator restarts. Names below are the `kubechain_*` series of the operator.
"""
from __future__ import annotations

import threading
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)
RECONCILIATIONS = Counter("kubechain_reconciliations_total", "Handler invocations, by kind and handler.",
                          ["kind", "handler"], registry=REGISTRY)
RECONCILE_ERRORS = Counter("kubechain_reconcile_errors_total", "Handler invocations that raised, by kind and handler.",
                           ["kind", "handler"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("kubechain_reconcile_duration_seconds", "Handler duration, by kind and handler.",
                              ["kind", "handler"], registry=REGISTRY,
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RECOVERIES = Counter("kubechain_taskrun_recoveries_total", "Actors restarted for a run from its checkpoint.",
                     ["namespace"], registry=REGISTRY)
TRANSITIONS = Counter("kubechain_taskrun_transitions_total", "Phase transitions seen by the operator.",
                      ["phase", "reason"], registry=REGISTRY)


class TaskRunPhases:
    """kubechain_taskruns{namespace, phase}: how many TaskRuns are in each phase now (computed at scrape)."""

    def __init__(self) -> None:
        self._phases: dict[str, tuple[str, str]] = {}  # uid -> (namespace, phase)
        self._lock = threading.Lock()

    def observe(self, uid: str, namespace: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop(uid, None)
            else:
                self._phases[uid] = (namespace, phase)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("kubechain_taskruns", "TaskRuns by namespace and phase.", labels=["namespace", "phase"])
        with self._lock:
            counts: dict[tuple[str, str], int] = {}
            for key in self._phases.values():
                counts[key] = counts.get(key, 0) + 1
        for (namespace, phase), count in sorted(counts.items()):
            family.add_metric([namespace, phase], count)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


PHASES = TaskRunPhases()
REGISTRY.register(PHASES)


class StoredBytes:
    """kubechain_stored_bytes{namespace}: bytes the TaskRuns of each namespace keep in the apiserver (statuses and
    sealed chunks, as kubechain/core/storage.py counts them for the namespace's storage cap), computed at scrape."""

    def __init__(self) -> None:
        self._bytes: dict[str, tuple[str, int]] = {}  # uid -> (namespace, bytes)
        self._lock = threading.Lock()

    def observe(self, uid: str, namespace: str, size: int | None) -> None:
        with self._lock:
            if size is None:
                self._bytes.pop(uid, None)
            else:
                self._bytes[uid] = (namespace, size)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("kubechain_stored_bytes", "Bytes of TaskRun status and sealed chunks kept in the "
                                   "apiserver, by namespace.", labels=["namespace"])
        with self._lock:
            totals: dict[str, int] = {}
            for namespace, size in self._bytes.values():
                totals[namespace] = totals.get(namespace, 0) + size
        for namespace, total in sorted(totals.items()):
            family.add_metric([namespace], total)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


STORED = StoredBytes()
REGISTRY.register(STORED)
_serving: set[int] = set()


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics in a background thread (0: don't); once per process (a replica starts it while standing by,
    so every replica answers its scrapes)."""
    if port and port not in _serving:
        start_http_server(port, addr=address, registry=REGISTRY)
        _serving.add(port)
