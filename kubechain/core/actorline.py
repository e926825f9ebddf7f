"""Who gets the next actor when runs want more than the node can start at once: the line of runs waiting for one.

A Ray worker process start costs ~1 s of CPU (the openai SDK's import). A burst's first wave started ~48 at once on
2 cores, each slower for the others, while the apiserver and the operator starved. So at most `limit` actor
processes start at once (KUBECHAIN_MAX_ACTOR_STARTS); a run that finds no free pooled actor and no free start waits
in this line, and the first of these to come goes to the run first in line, handed over directly:
  - an ended run's actor coming back to the pool (`returned`): no process starts at all;
  - a start slot freed by a start that finished (`started`): the run starts a process.
Order of the line, as admission's (queueing.py): higher `priority` first, then the namespace served longest ago (a
burst in one namespace cannot make another's run wait behind all of it: grants go round the namespaces), then
first come, first served. A grant waits for its run to take it; a run that stops waiting (its daemon stopped)
withdraws, and what it was granted goes to the next (`withdraw`). Pure bookkeeping, no locks: the actor pool
(kubechain/operator/actorpool.py) calls it under its own.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

SLOT = None  # a grant of a start slot (no actor: the run starts one)
WAITING = "waiting for an actor"  # how status.message of a run in the line begins (reconciler.py)


def waiting_message(limit: int) -> str:
    """What a run in the line says, once: no number in it that changes while it waits (each change is a write)."""
    return (f"{WAITING}: {limit} actor process(es) are starting (at most KUBECHAIN_MAX_ACTOR_STARTS at once) and no "
            f"ended run's actor is free; whichever of the two comes next goes to the run first in line")


@dataclass(eq=False)
class Waiter:
    """One run's place in the line, and what it was granted (`granted`: True once it has a grant)."""
    namespace: str
    priority: int = 0
    seq: int = 0
    granted: bool = False
    actor: Any = SLOT  # with `granted`: an ended run's actor, or SLOT
    context: Any = field(default=None, repr=False)  # the caller's (how to wake the run)


class ActorLine:
    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.starting = 0  # start slots held: processes starting, or granted to a run that has not taken it yet
        self.free: list[Any] = []  # ended runs' actors nobody waited for (the pool's idle ones, oldest first)
        self._waiting: list[Waiter] = []
        self._served: dict[str, int] = {}  # namespace -> the grant count at its last grant (while it waits)
        self._grants = 0
        self._seq = itertools.count()

    def ask(self, waiter: Waiter) -> bool:
        """A run wants an actor: granted at once (a free actor, else a free start slot), or it waits (False)."""
        waiter.seq = next(self._seq)
        if self.free and not self._waiting:
            self._grant(waiter, self.free.pop(0))
        elif self.starting < self.limit and not self._waiting:
            self.starting += 1
            self._grant(waiter, SLOT)
        else:
            self._waiting.append(waiter)
        return waiter.granted

    def returned(self, actor: Any) -> Waiter | None:
        """An ended run's actor is back: the run first in line gets it (returned, to be woken), else it is free."""
        if (first := self._next()) is not None:
            self._grant(first, actor)
            return first
        self.free.append(actor)
        return None

    def started(self) -> Waiter | None:
        """A start finished (the actor answers, or gave up): its slot goes to the run first in line, else frees."""
        if (first := self._next()) is not None:
            self._grant(first, SLOT)
            return first
        self.starting = max(0, self.starting - 1)
        return None

    def try_slot(self) -> bool:
        """A start slot for the pool's own refill, only when no run waits and one is free."""
        if self._waiting or self.starting >= self.limit:
            return False
        self.starting += 1
        return True

    def withdraw(self, waiter: Waiter) -> Waiter | None:
        """The run stops waiting: out of the line; what it was granted and did not take goes on (the run it woke,
        if any)."""
        if waiter in self._waiting:
            self._waiting.remove(waiter)
            return None
        if not waiter.granted:
            return None
        waiter.granted, actor = False, waiter.actor
        return self.started() if actor is SLOT else self.returned(actor)

    def position(self, waiter: Waiter) -> int:
        """1-based place in the line (0: not waiting)."""
        order = sorted(self._waiting, key=self._key)
        return order.index(waiter) + 1 if waiter in order else 0

    def waiting(self) -> int:
        return len(self._waiting)

    def _key(self, waiter: Waiter) -> tuple[int, int, int]:
        return -waiter.priority, self._served.get(waiter.namespace, -1), waiter.seq

    def _next(self) -> Waiter | None:
        if not self._waiting:
            return None
        first = min(self._waiting, key=self._key)
        self._waiting.remove(first)
        return first

    def _grant(self, waiter: Waiter, actor: Any) -> None:
        waiter.granted, waiter.actor = True, actor
        self._grants += 1
        self._served[waiter.namespace] = self._grants
        if not any(w.namespace == waiter.namespace for w in self._waiting):
            self._served.pop(waiter.namespace, None)  # bounded: a namespace that comes back later goes first
