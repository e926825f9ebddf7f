"""What the TaskRun reconciler (reconciler.py) decides from, and what it decides: `Observed` in, `Decision` out.

`Observed` is gathered by kubechain/operator/controllers/taskrun/observe.py; the supervisor's facts about the
run's actor are what it looked up in Ray, or what the last actor effect answered.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from kubechain.api.runspec import RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import ActorRef, Phase, Reason, TaskRunSpec, TaskRunStatus
from kubechain.api.v1alpha1.tool import ContainerExecution

from . import effects as do
from .fork import ForkSource
from .lifecycle import ChildOutcome, JobOutcome


class Trigger(Enum):
    EVENT = "event"
    CLOCK = "clock"
    SUPERVISOR = "supervisor"


# --- What the operator observed ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What a run runs, as the catalog says now: its Task (if it has one), then the Task's Agent."""
    found: bool                # False: the run's Task does not exist
    agent: str = ""
    ready: bool = False
    message: str = ""          # the Agent's status message, or why there is none
    agent_exists: bool = True  # False: no Agent of that name (a child run then fails: it was checked at creation)
    settling: bool = False     # the Agent is only being reconciled (start-up): wait quietly, no Stalled


@dataclass(frozen=True)
class Admitted:
    """The admission plan has a slot for the run (reserved for it until its Running write is seen)."""


@dataclass(frozen=True)
class InQueue:
    message: str
    position: int


@dataclass(frozen=True)
class Seen:
    """What this process last saw of the run: the length of its phaseHistory and its phase."""
    history: int
    phase: Phase


# The supervisor's facts about the run's actor: what it looked up, or what its last effect answered.
@dataclass(frozen=True)
class ActorAbsent:
    """No live actor holds the run (none was started, or the one named in the status is gone)."""


@dataclass(frozen=True)
class ActorFound:
    """A live actor holds the run: after an operator restart, or after its run returned while still Running."""
    name: str


@dataclass(frozen=True)
class ActorPrepared:
    """The RunSpec of a new actor is resolved (Agent, LLM, tools, Secrets), at `spec.epoch`."""
    spec: RunSpec = field(hash=False)


@dataclass(frozen=True)
class ActorCreated:
    """A new actor exists at the run's epoch and has not got the run yet."""
    ref: ActorRef
    spec: RunSpec = field(hash=False)


@dataclass(frozen=True)
class ActorQueued:
    """No pooled actor is free and every actor start is taken (KUBECHAIN_MAX_ACTOR_STARTS, `limit`): the run keeps
    its place in the actor line (kubechain/core/actorline.py) for an ended run's actor or a start slot."""
    spec: RunSpec = field(hash=False)
    limit: int = 1


@dataclass(frozen=True)
class ActorReturned:
    """The joined actor's run returned (the status says whether the run ended)."""


@dataclass(frozen=True)
class ActorLost:
    """The actor's process went away (killed, crashed, node lost) before its run ended."""
    message: str


@dataclass(frozen=True)
class ActorWedged:
    """The actor lives but stopped answering liveness pings (a Ray call its event loop serves) for the operator's
    KUBECHAIN_ACTOR_WEDGED_SECONDS: its event loop is blocked, so no checkpoint, cancel or step happens."""
    message: str


@dataclass(frozen=True)
class RayDown:
    """Ray cannot be reached, or refuses to create actors."""
    message: str


@dataclass(frozen=True)
class CannotStart:
    """The run cannot be resolved into a RunSpec now (its Task or Agent gone or not ready), or ever: `final` with
    the reason it fails for (a Secret or key its LLM or tools need does not exist: SecretNotFound)."""
    message: str
    final: Reason | None = None


ActorFact = (ActorAbsent | ActorFound | ActorPrepared | ActorCreated | ActorQueued | ActorReturned | ActorLost
             | ActorWedged | RayDown | CannotStart)
FAILURES = (ActorLost, ActorWedged, RayDown, CannotStart)


@dataclass(frozen=True)
class Observed:
    """Everything a decision is made from (controllers/taskrun/observe.py gathers it)."""
    trigger: Trigger
    ref: TaskRunRef
    status: TaskRunStatus
    spec: TaskRunSpec | None            # None: the run is gone, or its spec does not parse (spec_error)
    spec_error: str = ""
    exists: bool = True                 # False: deleted (or replaced by a new object of the same name)
    task: str | None = None             # the Task that launched the run (its label)
    task_shows: str | None = None       # the phase that Task shows, as far as this process knows
    seen: Seen | None = None            # None: first sight since this process started
    target: Target | None = None        # Pending runs
    slot: Admitted | InQueue | None = None  # Pending runs whose Agent is ready
    scheduled: bool = False             # this process wrote Running; the write has not come back yet
    children: Mapping[str, ChildOutcome] = field(default_factory=dict)  # by child TaskRun name
    jobs: Mapping[str, JobOutcome] = field(default_factory=dict)        # tool Jobs that exist, by call key
    # Waiting container calls without a Job: the tool's container as the Agent defines it now (None: the tool
    # is no longer a container tool of the Agent, so no Job will ever run the call).
    containers: Mapping[str, ContainerExecution | None] = field(default_factory=dict)
    actor: ActorFact | None = None      # the supervisor's
    failures: int = 0                   # the supervisor's consecutive failed attempts, this fact included
    retry_turn: bool = True             # a run backing off may start an actor for its attempt (max_retry_starts)
    traceparent: str = ""               # the deciding handler's span: a run's trace starts where it is scheduled
    created: datetime | None = None     # metadata.creationTimestamp: a run that never started times out from it
    absent_agents: frozenset[str] = frozenset()  # Agents that waiting delegate calls name and that do not exist
    tree_runs: int = 1                  # runs of the run's delegation tree, root included, as the index shows them
    max_tree_runs: int = 0              # KUBECHAIN_MAX_RUNS_PER_TREE (0: no limit)
    ray_namespace: str = ""
    fork_source: ForkSource | None = None  # Pending forks: their source run (spec.forkOf) as the index shows it

    @property
    def parsed(self) -> TaskRunSpec:
        """The spec, where a decision is reached only once it parsed."""
        assert self.spec is not None, "decided on a spec that does not parse"
        return self.spec


@dataclass(frozen=True)
class Decision:
    status: TaskRunStatus                   # whole; the observed object itself when nothing changes
    effects: tuple[do.Effect, ...] = ()
    guarded: bool = False                   # write only over the observed resourceVersion, else apply nothing
    holds_slot: bool = False                # the run took its admission slot: a failed write releases it
