"""The TaskRun actor: one detached, named Ray actor per TaskRun, holding its conversation."""
from __future__ import annotations

import asyncio
import logging

from kubechain.api.runspec import RunSpec
from kubechain.api.v1alpha1 import Phase

log = logging.getLogger(__name__)


class WrongActor(Exception):
    """Asked to join a run it does not hold: a standby never given a run (an operator crashed in between), or
    an actor holding another run."""


class TaskRunActor:
    """Implements kubechain.api.runspec.TaskRunActorAPI. The operator wraps it with ray.remote.

    Started with a RunSpec, or as a standby (spec None: a warm process, imports done) that the first `run(spec)`
    assigns to a run, for good."""

    def __init__(self, spec: RunSpec | None = None):
        self.spec = spec
        self._task: asyncio.Task[str] | None = None

    def __repr__(self) -> str:  # what the Ray dashboard and logs show for this actor
        if self.spec is None:
            return "TaskRun(standby)"
        return f"TaskRun({self.spec.taskrun.namespace}/{self.spec.taskrun.name}, epoch {self.spec.epoch})"

    async def assigned(self) -> bool:
        return self.spec is not None

    async def run(self, spec: RunSpec | None = None) -> str:
        if self.spec is None:
            if spec is None:
                _exit_soon()  # useless from now on: the operator starts another actor for the run
                raise WrongActor("this standby actor was never given a run")
            self.spec = spec
        elif spec is not None and (spec.taskrun.uid, spec.epoch) != (self.spec.taskrun.uid, self.spec.epoch):
            raise WrongActor(f"this actor runs {self!r}, not TaskRun {spec.taskrun.name} epoch {spec.epoch}")
        if self._task is None:
            self._task = asyncio.create_task(self._main())
        phase = await asyncio.shield(self._task)
        _exit_soon()
        return phase

    async def _main(self) -> str:
        assert self.spec is not None
        from .checkpoint import KubeCheckpointStore, RunGone
        from .llm import OpenAIChatClient
        from kubechain.observability import tracing
        from kubechain.observability.logs import configure_actor_logging

        from .loop import AgentLoop
        from .telemetry import RayMetrics, RunTelemetry
        from .tools.executor import LocalToolExecutor

        store = None
        try:
            store = KubeCheckpointStore(self.spec.taskrun, self.spec.epoch)
            status = await store.load()
            if status.phase is not Phase.RUNNING:  # ended, or waiting (no actor needed until the operator resumes it)
                return status.phase.value
            key = self.spec.api_key.get_secret_value() if self.spec.api_key else None
            llm = OpenAIChatClient(self.spec.llm, key)
            tracing.configure("kubechain-actor")
            ref = self.spec.taskrun
            configure_actor_logging(ref.namespace, ref.name)
            telemetry = RunTelemetry(self.spec.traceparent, RayMetrics.get(), **{
                "k8s.namespace.name": ref.namespace, "kubechain.name": ref.name, "kubechain.agent": self.spec.agent,
                "kubechain.epoch": self.spec.epoch})
            status = await AgentLoop(self.spec, llm, LocalToolExecutor(self.spec.tools, self.spec.secrets), store, telemetry).run(status)
            return status.phase.value
        except RunGone as exc:  # deleted, replaced, or fenced out by a newer actor: stop without writing
            log.warning("%r stops: %s", self, exc)
            return "Gone"
        except Exception as exc:  # a bug or a broken store: fail the run if the store still takes writes
            log.exception("%r failed", self)
            if store is None:
                raise
            return await _fail(store, exc)


async def _fail(store, exc: Exception) -> str:
    """Record an unexpected error as Failed; if even that cannot be written, let Ray report the actor failed
    so the operator restores a fresh one from the last checkpoint."""
    from kubechain.taskrun_lifecycle import enter
    from kubechain.api.v1alpha1 import Phase

    error = f"internal error: {type(exc).__name__}: {exc}"[:2000]
    status = await store.load()  # the last checkpoint, not the half-done step in memory
    await store.save(enter(status.model_copy(update={"error": error}), Phase.FAILED, "InternalError", error))
    return Phase.FAILED.value


def _exit_soon() -> None:
    """End the actor once the run has ended, after `run()` has returned its result to the caller."""
    import ray

    from kubechain.observability import tracing

    tracing.flush()  # the process is about to go: send its spans now
    asyncio.get_running_loop().call_later(0.2, ray.actor.exit_actor)
