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


class PerRun:
    """A gauge summed at scrape from one entry per TaskRun (uid -> labels, value), so a run that goes away or moves on
    (observe(uid, None)) leaves nothing behind."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self._runs: dict[str, tuple[tuple[str, ...], float]] = {}
        self._lock = threading.Lock()

    def set(self, uid: str, labels: tuple[str, ...] | None, value: float = 1) -> None:
        with self._lock:
            if labels is None:
                self._runs.pop(uid, None)
            else:
                self._runs[uid] = (labels, value)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            totals: dict[tuple[str, ...], float] = {}
            for labels, value in self._runs.values():
                totals[labels] = totals.get(labels, 0) + value
        for labels, total in sorted(totals.items()):
            family.add_metric(list(labels), total)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class TaskRunPhases(PerRun):
    """kubechain_taskruns{namespace, phase}: how many TaskRuns are in each phase now."""

    def __init__(self) -> None:
        super().__init__("kubechain_taskruns", "TaskRuns by namespace and phase.", ["namespace", "phase"])

    def observe(self, uid: str, namespace: str, phase: str | None) -> None:
        self.set(uid, None if phase is None else (namespace, phase))


class StoredBytes(PerRun):
    """kubechain_stored_bytes{namespace}: bytes the TaskRuns of each namespace keep in the apiserver (statuses and
    sealed chunks, as kubechain/core/storage.py counts them for the namespace's storage cap)."""

    def __init__(self) -> None:
        super().__init__("kubechain_stored_bytes", "Bytes of TaskRun status and sealed chunks kept in the apiserver, "
                         "by namespace.", ["namespace"])

    def observe(self, uid: str, namespace: str, size: int | None) -> None:
        self.set(uid, None if size is None else (namespace,), size or 0)


PHASES = TaskRunPhases()
STORED = StoredBytes()
REGISTRY.register(PHASES)
REGISTRY.register(STORED)
_serving: set[int] = set()


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics in a background thread (0: don't); once per process (a replica starts it while standing by,
    so every replica answers its scrapes)."""
    if port and port not in _serving:
        start_http_server(port, addr=address, registry=REGISTRY)
        _serving.add(port)
