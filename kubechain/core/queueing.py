"""Admission of TaskRuns to Running: how many may hold an actor at once, and who goes next.

Limits: KUBECHAIN_MAX_RUNNING (whole cluster) and KUBECHAIN_MAX_RUNNING_PER_NAMESPACE, or a Namespace's
annotation `kubechain.dev/max-running`. Runs over a limit wait in Pending, reason Queued, with their
position. The order, a pure function of what is queued and what runs:
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


@dataclass(frozen=True)
class Limits:
    total: int
    per_namespace: int
    namespaces: tuple[tuple[str, int], ...] = ()  # per-namespace overrides (Namespace annotation)

    def of(self, namespace: str) -> int:
        return dict(self.namespaces).get(namespace, self.per_namespace)

    def room(self, namespace: str, running: dict[str, int]) -> bool:
        """Whether one more run of `namespace` may start."""
        return sum(running.values()) < self.total and running.get(namespace, 0) < self.of(namespace)


class Slot(NamedTuple):  # a tuple: a burst's plan makes a thousand
    run: Queued
    admitted: bool
    position: int  # 0 when admitted, else 1-based place in the queue


def plan(queued: list[Queued], running: dict[str, int], limits: Limits) -> list[Slot]:
    """Every queued run, in admission order, admitted now or with its position."""
    counts = dict(running)
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
        if total < limits.total and counts.get(namespace, 0) < limits.of(namespace):
            counts[namespace] = counts.get(namespace, 0) + 1
            total += 1
            order.append(Slot(run, True, 0))
        else:
            waiting += 1
            order.append(Slot(run, False, waiting))
    return order


def why_queued(namespace: str, running: dict[str, int], limits: Limits) -> str:
    if running.get(namespace, 0) >= limits.of(namespace):
        return f"namespace limit: {running.get(namespace, 0)} of {limits.of(namespace)} running"
    return f"cluster limit: {sum(running.values())} of {limits.total} running"
