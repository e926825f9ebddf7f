"""TaskRun admission: the plan of who may start now, from the indexes (kubechain/core/queueing.py decides the order)."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, NamedTuple

from kubechain.core.queueing import Limits, Queued, Slot, plan, said, shown, why_queued
from kubechain.core.storage import allowance, cap_of, full_message, reserved, room

from kubechain.core.observation import Admitted, InQueue

from ...state import OperatorState
from ..catalog import IndexCatalog
from .indexes import QUEUE, priority_limit

WAKE_AGAIN_SECONDS = 5.0  # an admitted run is woken once; its own retry timer covers a lost wake
PLAN_SECONDS = 1.0  # how old a plan may be to tell a run it still waits (admitting always plans afresh)


class Counts(NamedTuple):
    """Runs holding a slot (running, or admitted by this process and not yet seen Running)."""
    namespaces: dict[str, int]
    llms: dict[tuple[str, str], int]  # by (namespace, LLM)


def admission(state: OperatorState, indexes: dict[str, Any], fresh: bool = True) -> tuple[list[Slot], Counts, Limits]:
    """The admission plan: queued runs whose agent is ready, against what runs (or was just started); with the
    runs holding a slot once it is carried out. Not `fresh`: the last plan, if under PLAN_SECONDS old,
    since in a burst every queued run's retry asks, and a plan is O(queued)."""
    last = state.last_plan
    if not fresh and last and time.monotonic() - last["at"] < PLAN_SECONDS:
        return last["plan"]
    agents = Agents(IndexCatalog(indexes), indexes.get("fork_sources"))
    holding: dict[str, set[str]] = {}
    on_llm: dict[tuple[str, str], int] = {}
    for namespace, runs in indexes["running_taskruns"].items():
        for uid, agent in runs:
            holding.setdefault(namespace, set()).add(uid)
            llm = (namespace, agents.llm(namespace, agent))
            on_llm[llm] = on_llm.get(llm, 0) + 1
    for uid, entry in state.scheduled.items():
        if uid not in holding.get(entry.namespace, ()):
            holding.setdefault(entry.namespace, set()).add(uid)
            on_llm[entry.namespace, entry.llm] = on_llm.get((entry.namespace, entry.llm), 0) + 1
    counts = Counts({ns: len(uids) for ns, uids in holding.items()}, on_llm)
    # Never ranked above its namespace's highest priority (the webhook refuses more; this holds without webhooks).
    highest = state.settings.limits.max_priority
    queued = [replace(entry, llm=agents.llm(entry.namespace, agent),
                      priority=min(entry.priority, priority_limit(entry.namespace, indexes, highest)[0]))
              for uid, kind, ref, entry in indexes["queued_taskruns"].get(QUEUE, [])
              if uid not in state.scheduled and (agent := agents.of(entry.namespace, kind, ref))
              and agents.ready(entry.namespace, agent)]
    settings = state.settings.reconcile
    overrides = {ns: next(iter(values)) for ns, values in indexes["namespace_limits"].items()}
    held, sources = quota_limits(indexes.get("run_quotas", {}), overrides, settings.max_running_per_namespace)
    full, capped = storage_limits(state, indexes, overrides, counts.namespaces, {q.namespace for q in queued})
    held, sources = held + full, sources + capped
    limits = Limits(settings.max_running, settings.max_running_per_namespace, tuple(overrides.items()),
                    agents.llm_limits({(q.namespace, q.llm) for q in queued} | set(on_llm)), held, sources)
    slots = plan(queued, counts.namespaces, limits, counts.llms)
    for slot in slots:
        if slot.admitted:
            counts.namespaces[slot.run.namespace] = counts.namespaces.get(slot.run.namespace, 0) + 1
            llm = (slot.run.namespace, slot.run.llm)
            counts.llms[llm] = counts.llms.get(llm, 0) + 1
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
        if mine is None and not fresh and not limits.room(namespace, counts.namespaces):
            mine = Slot(Queued(namespace, name, 0, ""), False, waiting + 1)
            waiting += 1
        if mine is not None and not mine.admitted:
            why = why_queued(namespace, counts.namespaces, limits, mine.run.llm, counts.llms)
            return InQueue(f"Queued: position {said(mine.position)} of {said(waiting)} ({why})", shown(mine.position))
    state.scheduled[uid] = mine.run if mine is not None else Queued(namespace, name, 0, "")
    return Admitted()


def quota_limits(quotas: Any, overrides: dict[str, int], default: int
                 ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """From the RunQuotas: namespaces held back (a spent quota, with its message), and maxRunning folded into the
    namespace limits (`overrides`, updated: the least applies) with the quota named as their source."""
    held, sources = [], []
    for namespace, entries in quotas.items():
        for name, running, spent in entries:
            if spent:
                held.append((namespace, spent))
            if running is not None and running < overrides.get(namespace, default):
                overrides[namespace] = running
                sources.append((namespace, f"RunQuota {name} maxRunning"))
    return tuple(held), tuple(sources)


def storage_cap(state: OperatorState, indexes: dict[str, Any], namespace: str) -> tuple[int, int, str]:
    """A namespace's storage cap (0: none), the allowance of each of its runs, and what sets the cap."""
    values = indexes.get("namespace_storage_caps", {}).get(namespace)
    storage = state.settings.storage
    cap, source = cap_of(next(iter(values), None) if values else None, storage.namespace_bytes)
    return cap, allowance(cap, storage.run_bytes), source


def storage_caps(state: OperatorState, indexes: dict[str, Any], namespace: str) -> tuple[int, str]:
    """The allowance a run of `namespace` gets in its RunSpec (0: none), and what sets it, for its error."""
    cap, each, source = storage_cap(state, indexes, namespace)
    if not cap:
        return each, "KUBECHAIN_MAX_RUN_STORED_BYTES"
    where = f"the storage cap of namespace {namespace} is {cap} bytes ({source})"
    return each, f"KUBECHAIN_MAX_RUN_STORED_BYTES; {where}" if each < cap else where


def storage_limits(state: OperatorState, indexes: dict[str, Any], overrides: dict[str, int], holding: dict[str, int],
                   namespaces: set[str]) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """For the namespaces with queued runs: those whose storage cap leaves no room (held, with the message), and
    the number of runs that may run folded into `overrides` (the least applies; kubechain/core/storage.py)."""
    held, sources = [], []
    stored = indexes.get("stored_taskruns", {})
    for namespace in sorted(namespaces):
        cap, each, source = storage_cap(state, indexes, namespace)
        runs = list(stored.get(namespace, ()))
        active = {r.uid for r in runs if r.active}
        admitted = sum(1 for uid, q in state.scheduled.items() if q.namespace == namespace and uid not in active)
        taken = reserved(runs, each, admitted)
        fits = room(cap, taken, each)
        running = holding.get(namespace, 0)
        if fits == 0:
            held.append((namespace, full_message(namespace, cap, taken, source)))
        elif fits is not None and running + fits < overrides.get(namespace, state.settings.reconcile.max_running_per_namespace):
            overrides[namespace] = running + fits
            sources.append((namespace, f"storage cap: {taken} of {cap} bytes held or reserved, {each} per run"))
    return tuple(held), tuple(sources)


class Agents:
    """What admission needs of the Agents (a burst is many runs of few agents: each is looked up once)."""

    def __init__(self, catalog: IndexCatalog, sources: Any = None):
        self._catalog, self._sources = catalog, sources or {}
        self._specs: dict[tuple[str, str], dict[str, Any] | None] = {}

    def of(self, namespace: str, kind: str, ref: str) -> str:
        """The agent of a queued run: its own agentRef, its Task's, or (a fork) its source run's."""
        if kind == "Task":
            return ((((self._catalog.get("Task", namespace, ref) or {}).get("spec") or {}).get("agentRef") or {})
                    .get("name", ""))
        if kind == "Fork":
            source = next(iter(self._sources.get((namespace, ref)) or ()), None)
            return source.agent if source is not None else ""
        return ref

    def _agent(self, namespace: str, agent: str) -> dict[str, Any]:
        if (namespace, agent) not in self._specs:
            self._specs[namespace, agent] = self._catalog.get("Agent", namespace, agent)
        return self._specs[namespace, agent] or {}

    def ready(self, namespace: str, agent: str) -> bool:
        return bool((self._agent(namespace, agent).get("status") or {}).get("ready"))

    def llm(self, namespace: str, agent: str) -> str:
        return ((self._agent(namespace, agent).get("spec") or {}).get("llmRef") or {}).get("name", "")

    def llm_limits(self, llms: set[tuple[str, str]]) -> tuple[tuple[tuple[str, str], int], ...]:
        """maxConcurrentRuns of the LLMs that set one."""
        found = ((key, ((self._catalog.get("LLM", *key) or {}).get("spec") or {}).get("maxConcurrentRuns"))
                 for key in sorted(llms) if key[1])
        return tuple((key, int(limit)) for key, limit in found if limit is not None)


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
