"""The TaskRun actor: one detached, named Ray actor per TaskRun, holding its conversation."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from kubechain.api.runspec import RunSpec

log = logging.getLogger(__name__)


class TaskRunActor:
    """Implements kubechain.api.runspec.TaskRunActorAPI. The operator wraps it with ray.remote."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self._task: asyncio.Task[str] | None = None
        self._step = 0

    def __repr__(self) -> str:  # what the Ray dashboard and logs show for this actor
        return f"TaskRun({self.spec.taskrun.namespace}/{self.spec.taskrun.name})"

    async def run(self) -> str:
        if self._task is None:
            self._task = asyncio.create_task(self._main())
        phase = await asyncio.shield(self._task)
        _exit_soon()
        return phase

    async def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "taskrun": f"{self.spec.taskrun.namespace}/{self.spec.taskrun.name}",
                "running": self._task is not None and not self._task.done()}

    async def _main(self) -> str:
        from .checkpoint import KubeCheckpointStore, RunGone
        from .llm import OpenAIChatClient
        from .loop import AgentLoop
        from .tools.executor import LocalToolExecutor

        try:
            store = KubeCheckpointStore(self.spec.taskrun)
            status = await store.load()
            if status.phase.terminal:
                return status.phase.value
            key = self.spec.api_key.get_secret_value() if self.spec.api_key else None
            llm = OpenAIChatClient(self.spec.llm, key)
            status = await AgentLoop(self.spec, llm, LocalToolExecutor(self.spec.tools), store).run(status)
            return status.phase.value
        except RunGone as exc:
            log.warning("%r stops: %s", self, exc)
            return "Gone"


def _exit_soon() -> None:
    """End the actor once the run has ended, after `run()` has returned its result to the caller."""
    import ray

    asyncio.get_running_loop().call_later(0.2, ray.actor.exit_actor)
