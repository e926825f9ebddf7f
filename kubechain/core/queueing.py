"""Admission of TaskRuns to Running: how many may hold an actor at once, and who goes next.

Limits: KUBECHAIN_MAX_RUNNING (whole cluster) and KUBECHAIN_MAX_RUNNING_PER_NAMESPACE, or a Namespace's
annotation `kubechain.dev/max-running`, and an LLM's `maxConcurrentRuns` (so a fleet of agents does not cause
its own 429 storm). Runs over a limit wait in Pending, reason Queued, with their position and the limit. A run
held back by its LLM's limit does not hold back the runs behind it that use another LLM. The order, a pure function of what is queued and what runs:
  1. higher `priority` first (Task/TaskRun spec; child runs inherit their parent's),
  2. then the namespace with the fewest runs admitted so far (so a burst in one namespace cannot starve
     another: slots go round the namespaces),
  3. then first come, first served (creation time, then name).
Only Running counts: a paused or delegating run holds no actor, so its children can always get slots.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Queued:
    namespace: str
    name: str
    priority: int
    created: str  # RFC 3339 creationTimestamp: sorts like time
    llm: str = ""  # the LLM its Agent talks to, in its namespace ("" not known yet)


@dataclass(frozen=True)
class Limits:
    total: int
    per_namespace: int
    namespaces: tuple[tuple[str, int], ...] = ()  # per-namespace overrides (Namespace annotation)
    llms: tuple[tuple[tuple[str, str], int], ...] = ()  # (namespace, LLM) -> its maxConcurrentRuns
    held: tuple[tuple[str, str], ...] = ()  # namespace -> why none of its runs starts now (a spent RunQuota)
    sources: tuple[tuple[str, str], ...] = ()  # namespace -> what sets its limit, when not the annotation

    def of(self, namespace: str) -> int:
        return dict(self.namespaces).get(namespace, self.per_namespace)

    def of_llm(self, namespace: str, llm: str) -> int | None:
        return dict(self.llms).get((namespace, llm))

    def room(self, namespace: str, running: dict[str, int]) -> bool:
        """Whether one more run of `namespace` may start."""
        return (sum(running.values()) < self.total and running.get(namespace, 0) < self.of(namespace)
                and namespace not in dict(self.held))


class Slot(NamedTuple):  # a tuple: a burst's plan makes a thousand
    run: Queued
    admitted: bool
    position: int  # 0 when admitted, else 1-based place in the queue


def plan(queued: list[Queued], running: dict[str, int], limits: Limits,
         on_llm: dict[tuple[str, str], int] | None = None) -> list[Slot]:
    """Every queued run, in admission order, admitted now or with its position. `running`: runs holding a slot
    by namespace; `on_llm`: by (namespace, LLM)."""
    counts, llm_counts, held = dict(running), dict(on_llm or {}), dict(limits.held)
    total = sum(counts.values())
    lines: dict[str, deque[Queued]] = {}
    for run in sorted(queued, key=lambda r: (-r.priority, r.created, r.name)):
        lines.setdefault(run.namespace, deque()).append(run)
    order: list[Slot] = []
    waiting = 0
    while lines:
        namespace = min(lines, key=lambda ns: (-lines[ns][0].priority, counts.get(ns, 0), lines[ns][0].created, ns))
        run = lines[namespace].popleft()
        if not lines[namespace]:
            del lines[namespace]
        llm, llm_limit = (namespace, run.llm), limits.of_llm(namespace, run.llm)
        if (total < limits.total and counts.get(namespace, 0) < limits.of(namespace) and namespace not in held
                and (llm_limit is None or llm_counts.get(llm, 0) < llm_limit)):
            counts[namespace] = counts.get(namespace, 0) + 1
            llm_counts[llm] = llm_counts.get(llm, 0) + 1
            total += 1
            order.append(Slot(run, True, 0))
        else:
            waiting += 1
            order.append(Slot(run, False, waiting))
    return order


EXACT_POSITIONS = 20


def shown(count: int) -> int:
    """A queue position or length as the status shows it: exact up to EXACT_POSITIONS, then rounded down to two
    significant digits (437 -> 430). A run deep in a long queue is then rewritten when its place changes by a
    tenth, not at every admission: a 1,000-run burst wrote its queued runs' status over and over, and those writes
    were most of what the apiserver did."""
    if count <= EXACT_POSITIONS:
        return count
    unit = 10 ** (len(str(count)) - 2)
    return count // unit * unit


def said(count: int) -> str:
    return str(count) if count <= EXACT_POSITIONS else f"~{shown(count)}"


def why_queued(namespace: str, running: dict[str, int], limits: Limits, llm: str = "",
               on_llm: dict[tuple[str, str], int] | None = None) -> str:
    """The limit a queued run waits for, for its message."""
    busy, llm_limit = (on_llm or {}).get((namespace, llm), 0), limits.of_llm(namespace, llm)
    if (why := dict(limits.held).get(namespace)) is not None:
        return why
    if llm_limit is not None and busy >= llm_limit:
        return f"LLM {llm} limit: {busy} of {llm_limit} running (maxConcurrentRuns)"
    if running.get(namespace, 0) >= limits.of(namespace):
        source = dict(limits.sources).get(namespace)
        return (f"namespace limit: {running.get(namespace, 0)} of {limits.of(namespace)} running"
                + (f" ({source})" if source else ""))
    return f"cluster limit: {sum(running.values())} of {limits.total} running"
