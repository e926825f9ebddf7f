"""What the TaskRun reconciler asks the operator to do: small frozen values, applied in order by one applier
(kubechain/operator/controllers/taskrun/effects.py), the only TaskRun code that calls Kubernetes or Ray or
posts Events. The status to write is not an effect: a Decision carries it whole, and it is written first.

Effects that start or join an actor answer with a fact (kubechain/core/reconciler.py: ActorFact) that the
supervisor hands to the next decision.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kubechain.api.runspec import CallInput, RunSpec


# --- Kubernetes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PostEvent:
    """An Event about the run."""
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class CreateChild:
    """Create a delegate call's child TaskRun (a deterministic name: a retry finds it); an Event if created."""
    body: dict[str, Any] = field(hash=False)
    message: str


@dataclass(frozen=True)
class CreateJob:
    """Create a container call's Job (a deterministic name: a retry finds it); an Event if created."""
    body: dict[str, Any] = field(hash=False)
    message: str


@dataclass(frozen=True)
class DeleteJob:
    """Delete a tool Job whose result the journal holds, or of a run that ended (a running tool is killed)."""
    name: str


@dataclass(frozen=True)
class CancelChild:
    """Set spec.cancel on a child run that has not ended."""
    name: str


@dataclass(frozen=True)
class LabelRun:
    """Set labels on this very TaskRun: a fork's kubechain.dev/forked-from (`kubectl get tr -l ...`) and its
    agent's (what wakes Pending runs when their Agent turns ready)."""
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DeleteRun:
    """Delete this very TaskRun (uid precondition): ttlSecondsAfterFinished passed."""


@dataclass(frozen=True)
class DropContext:
    """Delete the ConfigMaps of the ended run's `chunks` sealed chunks (contextRetentionSeconds passed)."""
    chunks: int


@dataclass(frozen=True)
class Wake:
    """Touch a TaskRun (this one if `name` is empty) so its event handler decides now."""
    name: str
    reason: str


@dataclass(frozen=True)
class WakeAdmitted:
    """A Running run ended or left: wake the queued runs the admission plan now admits."""


@dataclass(frozen=True)
class ShowOnTask:
    """The Task that launched the run shows the run's phase, output and error (`kubectl get tasks`)."""
    task: str
    phase: str
    output: str | None
    error: str | None


# --- The operator's own books ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Remember:
    """What this process saw of the run: (phaseHistory length, phase), for transitions and the phase gauge.
    `phase` None: the run is gone, forget it."""
    history: int
    phase: str | None


@dataclass(frozen=True)
class CountTransition:
    phase: str
    reason: str


@dataclass(frozen=True)
class CountRecovery:
    """An actor restored a run after a crash (not after a pause): kubechain_taskrun_recoveries_total."""


# --- Ray -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareActor:
    """Resolve the run into the RunSpec of a new actor at `epoch` (Agent, LLM, tools, their Secrets): answers
    ActorPrepared, or CannotStart."""
    epoch: int
    inputs: dict[str, CallInput] = field(hash=False)


@dataclass(frozen=True)
class CreateActor:
    """Create (or take from the pool) the actor for `spec`: answers ActorCreated, ActorQueued (it waits in the actor
    line: asked again, it waits on in its place), or RayDown."""
    spec: RunSpec = field(hash=False)


@dataclass(frozen=True)
class JoinActor:
    """Start or join the actor's run (`spec` assigns a pooled actor) and wait for it to return: answers
    ActorReturned, ActorLost or RayDown (nothing when the supervisor is asked to stop first)."""
    spec: RunSpec | None = field(default=None, hash=False)


@dataclass(frozen=True)
class KillActor:
    """Stop the run's actor if it lives: the one `name` (status.actor) names, and any under the run's own name."""
    name: str | None


@dataclass(frozen=True)
class DisconnectRay:
    """Drop the Ray session: the next call connects afresh (e.g. to a restarted head)."""


# --- Time ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sleep:
    """A daemon (supervisor, clock) looks again after `seconds`, or sooner when it is stopped."""
    seconds: float


@dataclass(frozen=True)
class Exit:
    """A daemon's work on this run is done."""


Effect = (PostEvent | CreateChild | CreateJob | DeleteJob | CancelChild | LabelRun | DeleteRun | DropContext | Wake
          | WakeAdmitted | ShowOnTask | Remember | CountTransition | CountRecovery | PrepareActor | CreateActor | JoinActor
          | KillActor | DisconnectRay | Sleep | Exit)
