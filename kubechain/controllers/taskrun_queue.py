"""TaskRun admission: the indexes the queue is planned from (kubechain/queueing.py decides the order)."""
from __future__ import annotations

import time
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION
from kubechain.queueing import Limits, Queued, Slot, plan, why_queued

from .catalog import IndexCatalog
from .taskrun_filters import is_pending, is_running

QUEUE = "queue"
WAKE_AGAIN_SECONDS = 5.0  # an admitted run is woken once; its own retry timer covers a lost wake
PLAN_SECONDS = 1.0  # how old a plan may be to tell a run it still waits (admitting always plans afresh)
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


def admission(memo: kopf.Memo, indexes: dict[str, Any], fresh: bool = True) -> tuple[list[Slot], dict[str, int], Limits]:
    """The admission plan: queued runs whose agent is ready, against what runs (or was just started); with the
    counts of runs running or admitted by namespace. Not `fresh`: the last plan, if under PLAN_SECONDS old,
    since in a burst every queued run's retry asks, and a plan is O(queued)."""
    last = memo.last_plan  # a shared dict: kopf gives each object a shallow copy of the memo
    if not fresh and last and time.monotonic() - last["at"] < PLAN_SECONDS:
        return last["plan"]
    catalog = IndexCatalog(indexes)
    holding: dict[str, set[str]] = {ns: set(uids) for ns, uids in indexes["running_taskruns"].items()}
    for uid, namespace in memo.scheduled.items():
        holding.setdefault(namespace, set()).add(uid)
    counts = {ns: len(uids) for ns, uids in holding.items()}
    ready: dict[tuple[str, str], bool] = {}  # (namespace, agent): a burst is many runs of few agents
    queued = [entry for uid, kind, ref, entry in indexes["queued_taskruns"].get(QUEUE, [])
              if uid not in memo.scheduled and agent_ready(catalog, entry.namespace, kind, ref, ready)]
    settings = memo.settings.reconcile
    overrides = tuple((ns, next(iter(values))) for ns, values in indexes["namespace_limits"].items())
    limits = Limits(settings.max_running, settings.max_running_per_namespace, overrides)
    slots = plan(queued, counts, limits)
    for slot in slots:
        if slot.admitted:
            counts[slot.run.namespace] = counts.get(slot.run.namespace, 0) + 1
    last.update(at=time.monotonic(), plan=(slots, counts, limits))
    return slots, counts, limits


def admit(memo: kopf.Memo, indexes: dict[str, Any], namespace: str, name: str, uid: str) -> tuple[str, int] | None:
    """None if the run may start now (it counts as running from then on), else (Queued message, position).
    Call under memo.admission_lock. A recent plan may say "wait"; only a fresh one says "go". A run too new for
    the recent plan waits at its end if that plan left no slot for its namespace (a burst's runs arrive faster
    than they can be planned one by one); its next retry places it exactly."""
    for fresh in (False, True):
        slots, counts, limits = admission(memo, indexes, fresh)
        mine = next((s for s in slots if (s.run.namespace, s.run.name) == (namespace, name)), None)
        waiting = sum(not s.admitted for s in slots)
        if mine is None and not fresh and not limits.room(namespace, counts):
            mine = Slot(Queued(namespace, name, 0, ""), False, waiting + 1)
            waiting += 1
        if mine is not None and not mine.admitted:
            return f"Queued: position {mine.position} of {waiting} ({why_queued(namespace, counts, limits)})", mine.position
    memo.scheduled[uid] = namespace
    return None


def agent_ready(catalog: IndexCatalog, namespace: str, kind: str, ref: str, seen: dict[tuple[str, str], bool]) -> bool:
    if kind == "Task":
        ref = (((catalog.get("Task", namespace, ref) or {}).get("spec") or {}).get("agentRef") or {}).get("name", "")
    if (namespace, ref) not in seen:
        seen[namespace, ref] = bool(((catalog.get("Agent", namespace, ref) or {}).get("status") or {}).get("ready"))
    return seen[namespace, ref]


async def wake_admitted(memo: kopf.Memo, indexes: dict[str, Any]) -> None:
    """A slot freed: the runs the plan now admits start on this event, not at their next retry. Each admitted
    run is woken once, not on every freed slot: in a burst that would be a write per admitted run per end."""
    async with memo.admission_lock:
        slots, _, _ = admission(memo, indexes)
    now = time.monotonic()
    for run in [run for run, at in memo.woken.items() if now - at >= WAKE_AGAIN_SECONDS]:
        del memo.woken[run]  # in place: the dict is shared, the memo holding it is kopf's per-object copy
    for slot in slots:
        run = (slot.run.namespace, slot.run.name)
        if slot.admitted and run not in memo.woken:
            memo.woken[run] = now
            await memo.kube.wake("taskruns", *run, reason=f"slot {time.time_ns()}")
