"""The TaskRun actor: one detached, named Ray actor per TaskRun, holding its conversation."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubechain.api.runspec import KubeCredentials, RunSpec
from kubechain.api.v1alpha1 import Phase, Reason

log = logging.getLogger(__name__)


RECYCLE_GRACE_SECONDS = 30.0  # how long a pooled actor whose run ended waits to be taken back before it exits
RUNS_PER_PROCESS = 100  # a pooled actor exits after this many runs: whatever a run leaves behind stays bounded


class WrongActor(Exception):
    """Asked to join a run it does not hold: a pooled actor holding no run, or holding another run."""


class TaskRunActor:
    """Implements kubechain.api.runspec.TaskRunActorAPI. The operator wraps it with ray.remote.

    Named after its run (it ends with it), or pooled (a warm process, imports done); either way `run(spec)` gives
    it its run: never the constructor, whose arguments Ray keeps in the GCS for a detached actor's lifetime, and
    the spec carries the run's secrets. Once its run has ended, `recycle()` returns a pooled actor to the pool, so
    a run after it skips a worker process start (~1 s). Runs never overlap in one actor."""

    def __init__(self, pooled: bool = True):
        self.spec: RunSpec | None = None
        self._task: asyncio.Task[str] | None = None
        self._pooled = pooled
        self._runs = 0
        self._retire: asyncio.TimerHandle | None = None
        self._rest: Any = None  # the run's apiserver connection (actors/checkpoint.py KubeREST), made with its token
        self._live: Any = None  # the open step's streaming answer (actors/livestream.py LiveStream), for readers

    def __repr__(self) -> str:  # what the Ray dashboard and logs show for this actor
        if self.spec is None:
            return "TaskRun(standby)"
        return f"TaskRun({self.spec.taskrun.namespace}/{self.spec.taskrun.name}, epoch {self.spec.epoch})"

    async def holds(self, uid: str | None = None) -> bool:
        """Whether the actor holds the run of TaskRun `uid` (any run, without it): a pooled actor's name in an
        old status may meanwhile stand for another run."""
        return self.spec is not None and uid in (None, self.spec.taskrun.uid)

    async def ping(self) -> bool:
        """The operator's liveness probe: served by the event loop the run uses, so only a loop that turns answers."""
        return True

    async def run(self, spec: RunSpec | None = None) -> str:
        if self.spec is None:
            if spec is None:
                raise WrongActor("this pooled actor holds no run")
            self.spec = spec
        elif spec is not None and (spec.taskrun.uid, spec.epoch) != (self.spec.taskrun.uid, self.spec.epoch):
            raise WrongActor(f"this actor runs {self!r}, not TaskRun {spec.taskrun.name} epoch {spec.epoch}")
        if self._task is None:
            self._runs += 1
            self._task = asyncio.create_task(self._main())
        phase = await asyncio.shield(self._task)
        if not self._pooled:
            _exit_soon(0.2)
        elif self._retire is None:  # unless the operator takes it back meanwhile
            self._retire = _exit_soon(RECYCLE_GRACE_SECONDS)
        return phase

    async def stream_since(self, uid: str, step: int, source: str, attempt: int, offset: int,
                           wait: float = 10.0) -> dict | None:
        """The open step's answer past a reader's cursor (kubechain/core/livestream.py), long-polled up to `wait`
        seconds; None when the actor does not hold run `uid` (a pooled actor may hold another run meanwhile)."""
        if self.spec is None or self.spec.taskrun.uid != uid or self._live is None:
            return None
        return await self._live.wait_since(step, source, attempt, offset, min(wait, 30.0))

    async def renew(self, uid: str, kube: KubeCredentials) -> bool:
        """The operator's fresh token for the run it holds, before the one in use expires."""
        if self.spec is None or self.spec.taskrun.uid != uid:
            return False
        self.spec.kube = kube
        if self._rest is not None:
            self._rest.renew(kube)
        return True

    async def recycle(self) -> bool:
        """Back to the pool after its run ended: True if it holds no run now; False if it ends instead."""
        if not self._pooled or self._task is None or not self._task.done():
            return False
        if self._retire is not None:
            self._retire.cancel()
        if self._runs >= RUNS_PER_PROCESS:
            _exit_soon(0.2)
            return False
        self.spec, self._task, self._retire, self._live = None, None, None, None
        return True

    async def _main(self) -> str:
        assert self.spec is not None
        from .checkpoint import (CheckpointCorrupt, ContextStoreUnavailable, KubeCheckpointStore, KubeREST, RunGone,
                                 StorageQuotaExceeded)
        from .livestream import LiveStream
        from .llm import OpenAIChatClient
        from kubechain.runtime import tracing
        from kubechain.runtime.logs import configure_actor_logging

        from .loop import AgentLoop
        from .telemetry import RayMetrics, RunTelemetry
        from .tools.executor import LocalToolExecutor

        store = None
        self._rest = KubeREST.for_run(self.spec.kube)
        try:
            caps = self.spec.caps
            store = KubeCheckpointStore(self.spec.taskrun, self.spec.epoch, rest=self._rest,
                                        allowance=(caps.stored_bytes, caps.stored_source),
                                        context_store=self.spec.context_store)
            status = await store.load()
            if self.spec.fork is not None and not status.context_window and status.phase is Phase.RUNNING:
                from . import fork  # a fork's first actor (or one after a crash mid-copy) copies its source first

                status = await fork.start(self.spec, self._rest, store, status)
            if status.phase is not Phase.RUNNING:  # ended, or waiting (no actor needed until the operator resumes it)
                return status.phase.value
            key = self.spec.api_key.get_secret_value() if self.spec.api_key else None
            self._live = LiveStream()
            llm = OpenAIChatClient(self.spec.llm, key, self._live)
            tracing.configure("kubechain-actor")
            ref = self.spec.taskrun
            configure_actor_logging(ref.namespace, ref.name, self.spec.json_logs)
            telemetry = RunTelemetry(self.spec.traceparent, RayMetrics.get(), **{
                "k8s.namespace.name": ref.namespace, "kubechain.name": ref.name, "kubechain.agent": self.spec.agent,
                "kubechain.epoch": self.spec.epoch})
            tools = LocalToolExecutor(self.spec.tools, self.spec.secrets, self.spec.code_tools,
                                      self.spec.local_tool_timeout_seconds)
            try:
                status = await AgentLoop(self.spec, llm, tools, store, telemetry, self._live).run(status)
            finally:  # a pooled process outlives the run: nothing of it may stay open
                await asyncio.gather(llm.close(), tools.aclose(), return_exceptions=True)
            return status.phase.value
        except RunGone as exc:  # deleted, replaced, or fenced out by a newer actor: stop without writing
            log.warning("%r stops: %s", self, exc)
            return "Gone"
        except CheckpointCorrupt as exc:  # restoring again would find the same: fail the run, naming the chunk
            assert store is not None
            return await _corrupt(self, store, exc)
        except StorageQuotaExceeded as exc:  # the step is not written: the run ends over its last checkpoint
            assert store is not None
            return await _corrupt(self, store, exc, Reason.STORAGE_QUOTA_EXCEEDED)
        except ContextStoreUnavailable as exc:  # waited its bound for the external store: fail over the last checkpoint
            assert store is not None
            return await _corrupt(self, store, exc, Reason.CONTEXT_STORE_UNAVAILABLE)
        except Exception as exc:  # a bug or a broken store: fail the run if the store still takes writes
            log.exception("%r failed", self)
            if store is None:
                raise
            try:
                return await _fail(store, exc)
            except CheckpointCorrupt as corrupt:
                return await _corrupt(self, store, corrupt)
        finally:  # the run's token and store connection go with the run: a pooled actor's next run brings its own
            if store is not None:
                await store.close()
            if self.spec.kube is not None:
                await self._rest.close()
            self._rest = None


async def _corrupt(actor: TaskRunActor, store, exc: Exception, reason: str = Reason.CHECKPOINT_CORRUPT) -> str:
    """Fail the run with `reason` without rewriting its conversation (the checkpoint cannot be read back, or the
    next one may not be written)."""
    from .checkpoint import RunGone

    log.error("%r: %s", actor, exc)
    try:
        await store.fail(reason, str(exc))
    except RunGone:  # the run was deleted (its chunks with it), or a newer actor owns it
        return "Gone"
    await store.event(reason, f"{Phase.FAILED.value}: {exc}", warning=True)
    return Phase.FAILED.value


async def _fail(store, exc: Exception) -> str:
    """Record an unexpected error as Failed (with a Warning, as every failure has); if even that cannot be
    written, let Ray report the actor failed so the operator restores a fresh one from the last checkpoint."""
    from datetime import datetime, timezone

    from kubechain.core.lifecycle import enter

    error = f"internal error: {type(exc).__name__}: {exc}"[:2000]
    status = await store.load()  # the last checkpoint, not the half-done step in memory
    await store.save(enter(status.model_copy(update={"error": error}), Phase.FAILED, Reason.INTERNAL_ERROR, error,
                           now=datetime.now(timezone.utc)))
    await store.event(Reason.INTERNAL_ERROR, f"{Phase.FAILED.value}: {error}", warning=True)
    return Phase.FAILED.value


def _exit_soon(delay: float) -> asyncio.TimerHandle:
    """End the actor after `delay`, so `run()` returns its result to the caller first."""
    import ray

    from kubechain.runtime import tracing

    tracing.flush()  # the process may be about to go: send its spans now
    return asyncio.get_running_loop().call_later(delay, ray.actor.exit_actor)
