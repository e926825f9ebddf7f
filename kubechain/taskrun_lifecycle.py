"""The TaskRun state machine, in one place.

    Pending ──Scheduled──▶ Running ──FinalAnswer──▶ Completed
                              │  ▲
                              │  └──(answers, later release)── PausedForUserInput
                              └──LLMError / InternalError──▶ Failed

The operator owns Pending → Running (it resolves the Task and Agent; its supervisor starts the
actor); the actor owns every edge out of Running. `decide()` is the operator's half as a pure function
of what it observed; `enter()` records any transition the same way for both halves.
"""
from __future__ import annotations

from dataclasses import dataclass

from kubechain.api.v1alpha1 import Phase, PhaseTransition, TaskRunStatus
from kubechain.api.v1alpha1.common import now_rfc3339

EDGES: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.RUNNING, Phase.FAILED}),
    Phase.RUNNING: frozenset({Phase.COMPLETED, Phase.FAILED, Phase.PAUSED_FOR_USER_INPUT}),
    Phase.PAUSED_FOR_USER_INPUT: frozenset({Phase.RUNNING, Phase.FAILED}),
    Phase.COMPLETED: frozenset(),
    Phase.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def enter(status: TaskRunStatus, phase: Phase, reason: str, message: str = "") -> TaskRunStatus:
    """`status` moved to `phase`, with the transition appended to phaseHistory."""
    if phase not in EDGES[status.phase]:
        raise IllegalTransition(f"{status.phase.value} -> {phase.value} ({reason})")
    history = [*status.phase_history, PhaseTransition(phase=phase, time=now_rfc3339(), reason=reason, message=message)]
    return status.model_copy(update={"phase": phase, "message": message, "phase_history": history})


# What the operator observed about a TaskRun's surroundings.
@dataclass(frozen=True)
class Observation:
    task_found: bool
    agent_name: str = ""
    agent_ready: bool = False
    agent_message: str = ""


# What the operator should do next; the controller applies it.
@dataclass(frozen=True)
class Wait:
    """Stay Pending, say why, look again later (or when a dependency changes)."""
    message: str


@dataclass(frozen=True)
class Schedule:
    """Enter Running and start the actor."""


@dataclass(frozen=True)
class Nothing:
    """Not the scheduler's business: a Running run is the supervisor's (controllers/taskrun.py), ended runs
    need nothing, and paused runs hold no actor (answers resume them, later release)."""


Decision = Wait | Schedule | Nothing


def decide(status: TaskRunStatus, seen: Observation) -> Decision:
    match status.phase:
        case Phase.PENDING if not seen.task_found:
            return Wait("waiting for its Task to exist")
        case Phase.PENDING if not seen.agent_ready:
            return Wait(f"waiting for Agent {seen.agent_name!r} to be ready: {seen.agent_message}")
        case Phase.PENDING:
            return Schedule()
        case Phase.RUNNING | Phase.PAUSED_FOR_USER_INPUT | Phase.COMPLETED | Phase.FAILED:
            return Nothing()
