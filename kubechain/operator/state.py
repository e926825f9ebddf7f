"""The operator process's state: one typed object in kopf's memo (`memo.state`).

kopf hands every handler a shallow copy of the memo, so everything here is shared by reference: handlers
of all objects see the same dicts and locks. Nothing here is durable: a restarted operator rebuilds it from
the objects themselves (what it holds is bookkeeping and caches, never the truth about a run).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Coroutine

from kubechain.api.v1alpha1 import Phase
from kubechain.core.queueing import Queued

from .credentials import ActorCredentials
from .kube import Kube
from .llmcheck import LLMChecks
from .raygateway import RayGateway
from .settings import Settings


@dataclass
class OperatorState:
    settings: Settings
    kube: Kube
    ray: RayGateway
    credentials: ActorCredentials | None = None
    """The actors' Kubernetes credentials, per namespace (none in handler tests: the actors use their own)."""
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    """TaskRun uid -> the lock of its decisions: its event handler, timers and clock decide one at a time."""
    scheduled: dict[str, Queued] = field(default_factory=dict)
    """TaskRun uid -> its queue entry: moved to Running by this process, not yet seen Running (it holds a slot)."""
    retrying: set[str] = field(default_factory=set)
    """TaskRun uids holding a turn to start an actor for their next LLM attempt (ReconcileSettings.max_retry_starts),
    until the attempt's actor returns or the LLM answers."""
    answered: dict[tuple[str, str], float] = field(default_factory=dict)
    """(namespace, agent) -> monotonic time a run of it got an answer again after failed LLM requests: the provider
    is back, so its other runs backing off need no turn."""
    admission_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One admission decision at a time (taken without awaits inside)."""
    last_plan: dict[str, Any] = field(default_factory=dict)
    """"at" (monotonic time) and "plan": the last admission plan (controllers/taskrun/queue.py)."""
    woken: dict[tuple[str, str], float] = field(default_factory=dict)
    """(namespace, TaskRun) -> monotonic time an admitted run was last woken."""
    task_phases: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, Task) -> the TaskRun phase last shown in the Task's status."""
    phases: dict[str, tuple[int, Phase]] = field(default_factory=dict)
    """TaskRun uid -> (length of phaseHistory, phase) last seen: transitions, the phase gauge, freed slots."""
    llm_checks: LLMChecks = field(default_factory=LLMChecks)
    """The LLMs' provider checks: their locks and last verdicts, and the key Secrets' versions seen."""
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    """TaskSchedule uid -> set when its spec changed: its daemon acts now (controllers/schedule.py)."""
    background: set[asyncio.Task] = field(default_factory=set)
    """Tasks that outlive the handler that started them (asyncio keeps only weak references to tasks)."""
    ray_connecting: asyncio.Task | None = None
    """The first connection to Ray, made in the background so a slow Ray does not hold up the start."""
    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        """The run is gone, or its Running daemon took over from the scheduler."""
        self.locks.pop(uid, None)
        self.scheduled.pop(uid, None)
        self.retrying.discard(uid)

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
