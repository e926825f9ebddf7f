"""TaskRun admission: the indexes the queue is planned from (kubechain/queueing.py decides the order)."""
from __future__ import annotations

import time
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION
from kubechain.queueing import Limits, Queued, Slot, plan

from .catalog import IndexCatalog
from .taskrun_filters import is_pending, is_running

QUEUE = "queue"
ANNOTATION_MAX_RUNNING = f"{GROUP}/max-running"


@kopf.index(GROUP, VERSION, "taskruns", when=is_pending)
def queued_taskruns(namespace: str, name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any):
    """Every Pending TaskRun, for the admission queue: (uid, agent or Task it names, queue entry)."""
    ref = (spec.get("agentRef") or spec.get("taskRef") or {}).get("name", "")
    kind = "Agent" if spec.get("agentRef") else "Task"
    entry = Queued(namespace, name, int(spec.get("priority") or 0), meta.get("creationTimestamp") or "")
    return {QUEUE: (uid, kind, ref, entry)}


@kopf.index(GROUP, VERSION, "taskruns", when=is_running)
def running_taskruns(namespace: str, uid: str, **_: Any):
    """Running TaskRuns (each holds an actor) by namespace: what the limits count."""
    return {namespace: uid}


@kopf.index("", "v1", "namespaces", annotations={ANNOTATION_MAX_RUNNING: kopf.PRESENT})
def namespace_limits(name: str, annotations: kopf.Annotations, **_: Any):
    """Namespaces with their own limit (annotation kubechain.dev/max-running)."""
    value = annotations.get(ANNOTATION_MAX_RUNNING, "")
    return {name: int(value)} if value.isdigit() else None


def admission(memo: kopf.Memo, indexes: dict[str, Any]) -> tuple[list[Slot], dict[str, int], Limits]:
    """The admission plan now: queued runs whose agent is ready, against what runs (or was just started)."""
    catalog = IndexCatalog(indexes)
    holding: dict[str, set[str]] = {ns: set(uids) for ns, uids in indexes["running_taskruns"].items()}
    for uid, namespace in memo.scheduled.items():
        holding.setdefault(namespace, set()).add(uid)
    counts = {ns: len(uids) for ns, uids in holding.items()}
    queued = [entry for uid, kind, ref, entry in indexes["queued_taskruns"].get(QUEUE, [])
              if uid not in memo.scheduled and agent_ready(catalog, entry.namespace, kind, ref)]
    settings = memo.settings.reconcile
    overrides = tuple((ns, next(iter(values))) for ns, values in indexes["namespace_limits"].items())
    limits = Limits(settings.max_running, settings.max_running_per_namespace, overrides)
    return plan(queued, counts, limits), counts, limits


def agent_ready(catalog: IndexCatalog, namespace: str, kind: str, ref: str) -> bool:
    if kind == "Task":
        ref = (((catalog.get("Task", namespace, ref) or {}).get("spec") or {}).get("agentRef") or {}).get("name", "")
    return bool(((catalog.get("Agent", namespace, ref) or {}).get("status") or {}).get("ready"))


async def wake_admitted(memo: kopf.Memo, indexes: dict[str, Any]) -> None:
    """A slot freed: the runs the plan now admits start on this event, not at their next retry."""
    async with memo.admission_lock:
        slots, _, _ = admission(memo, indexes)
    for slot in slots:
        if slot.admitted:
            await memo.kube.wake("taskruns", slot.run.namespace, slot.run.name, reason=f"slot {time.time_ns()}")
