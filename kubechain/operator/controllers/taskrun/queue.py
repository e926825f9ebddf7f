"""TaskRun admission: the plan of who may start now, from the indexes (kubechain/core/queueing.py decides the order)."""
from __future__ import annotations

import time
from typing import Any

from kubechain.core.queueing import Limits, Queued, Slot, plan, why_queued

from kubechain.core.observation import Admitted, InQueue

from ...state import OperatorState
from ..catalog import IndexCatalog
from .indexes import QUEUE

WAKE_AGAIN_SECONDS = 5.0  # an admitted run is woken once; its own retry timer covers a lost wake
PLAN_SECONDS = 1.0  # how old a plan may be to tell a run it still waits (admitting always plans afresh)


def admission(state: OperatorState, indexes: dict[str, Any], fresh: bool = True) -> tuple[list[Slot], dict[str, int], Limits]:
    """The admission plan: queued runs whose agent is ready, against what runs (or was just started); with the
    counts of runs running or admitted by namespace. Not `fresh`: the last plan, if under PLAN_SECONDS old,
    since in a burst every queued run's retry asks, and a plan is O(queued)."""
    last = state.last_plan
    if not fresh and last and time.monotonic() - last["at"] < PLAN_SECONDS:
        return last["plan"]
    catalog = IndexCatalog(indexes)
    holding: dict[str, set[str]] = {ns: set(uids) for ns, uids in indexes["running_taskruns"].items()}
    for uid, namespace in state.scheduled.items():
        holding.setdefault(namespace, set()).add(uid)
    counts = {ns: len(uids) for ns, uids in holding.items()}
    ready: dict[tuple[str, str], bool] = {}  # (namespace, agent): a burst is many runs of few agents
    queued = [entry for uid, kind, ref, entry in indexes["queued_taskruns"].get(QUEUE, [])
              if uid not in state.scheduled and agent_ready(catalog, entry.namespace, kind, ref, ready)]
    settings = state.settings.reconcile
    overrides = tuple((ns, next(iter(values))) for ns, values in indexes["namespace_limits"].items())
    limits = Limits(settings.max_running, settings.max_running_per_namespace, overrides)
    slots = plan(queued, counts, limits)
    for slot in slots:
        if slot.admitted:
            counts[slot.run.namespace] = counts.get(slot.run.namespace, 0) + 1
    last.update(at=time.monotonic(), plan=(slots, counts, limits))
    return slots, counts, limits


def admit(state: OperatorState, indexes: dict[str, Any], namespace: str, name: str, uid: str) -> Admitted | InQueue:
    """Admitted if the run may start now (it counts as running from then on, until `state.forget(uid)`), else its
    place in the queue. Call under state.admission_lock. A recent plan may say "wait"; only a fresh one says
    "go". A run too new for the recent plan waits at its end if that plan left no slot for its namespace (a burst's runs arrive faster
    than they can be planned one by one); its next retry places it exactly."""
    for fresh in (False, True):
        slots, counts, limits = admission(state, indexes, fresh)
        mine = next((s for s in slots if (s.run.namespace, s.run.name) == (namespace, name)), None)
        waiting = sum(not s.admitted for s in slots)
        if mine is None and not fresh and not limits.room(namespace, counts):
            mine = Slot(Queued(namespace, name, 0, ""), False, waiting + 1)
            waiting += 1
        if mine is not None and not mine.admitted:
            return InQueue(f"Queued: position {mine.position} of {waiting} ({why_queued(namespace, counts, limits)})",
                           mine.position)
    state.scheduled[uid] = namespace
    return Admitted()


def agent_ready(catalog: IndexCatalog, namespace: str, kind: str, ref: str, seen: dict[tuple[str, str], bool]) -> bool:
    if kind == "Task":
        ref = (((catalog.get("Task", namespace, ref) or {}).get("spec") or {}).get("agentRef") or {}).get("name", "")
    if (namespace, ref) not in seen:
        seen[namespace, ref] = bool(((catalog.get("Agent", namespace, ref) or {}).get("status") or {}).get("ready"))
    return seen[namespace, ref]


async def wake_admitted(state: OperatorState, indexes: dict[str, Any]) -> None:
    """A slot freed: the runs the plan now admits start on this event, not at their next retry. Each admitted
    run is woken once, not on every freed slot: in a burst that would be a write per admitted run per end."""
    async with state.admission_lock:
        slots, _, _ = admission(state, indexes)
    now = time.monotonic()
    for run in [run for run, at in state.woken.items() if now - at >= WAKE_AGAIN_SECONDS]:
        del state.woken[run]
    for slot in slots:
        run = (slot.run.namespace, slot.run.name)
        if slot.admitted and run not in state.woken:
            state.woken[run] = now
            await state.kube.wake("taskruns", *run, reason=f"slot {time.time_ns()}")
