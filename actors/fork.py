"""A fork's first actor copies its source's checkpoint before its first step (TaskRun.spec.forkOf).

Why the actor and not the operator: the source's status and its sealed chunks (ConfigMaps) are in the fork's own
namespace, which the run's token (the namespace's `kubechain-actor` account) may read already; the operator has
no ConfigMap rights at all, and copying here keeps it that way (kuberay/base/operator-rbac.yaml).

The source is read, never written: its status by uid (a source replaced by a new object of its name is not
forked), its chunks checked against their checksums and chain, as a restore checks its own. The cut is
kubechain/core/fork.py's; the copy is written by the fork's own checkpoint store, which seals the long part of it
into the fork's own chunks (owned by the fork, deleted with it). A crash before that write leaves the fork with
no conversation: the next actor copies again (a leftover chunk of the older epoch is replaced, as in any seal).
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

from kubechain.api.context import DATA_KEY, chained, decode, described, part_name
from kubechain.api.runspec import ForkPlan, RunSpec
from kubechain.api.v1alpha1 import GROUP, VERSION, ForkOf, Phase, Reason, TaskRunStatus
from kubechain.api.v1alpha1.common import now_rfc3339
from kubechain.core.fork import ForkError, cut
from kubechain.core.lifecycle import enter
from kubechain.core.storage import store_name

from kubechain.runtime.contextdb import StoreCorrupt

from .checkpoint import CheckpointStore, KubeREST
from .pgstore import PostgresChunkStore, StoreUnavailable

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0  # an apiserver away (or a 5xx) while the source is read: retried this long, then the run fails


class SourceReader:
    """Reads a fork's source run: its status and the sealed chunks in front of its tail."""

    def __init__(self, rest: KubeREST, plan: ForkPlan, retry_seconds: float = RETRY_SECONDS):
        self.rest, self.plan, self.retry_seconds = rest, plan, retry_seconds
        ns = plan.source.namespace
        self._run = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/taskruns/{plan.source.name}/status"
        self._configmaps = f"/api/v1/namespaces/{ns}/configmaps"

    async def read(self) -> TaskRunStatus:
        """The source's whole status: every message and call, sealed ones first. ForkError if it is gone,
        replaced, or a chunk is missing or does not match what the status vouches for."""
        obj = await self._get(self._run, f"TaskRun {self.plan.source.name!r}")
        if obj["metadata"]["uid"] != self.plan.source.uid:
            raise ForkError(f"spec.forkOf.name: TaskRun {self.plan.source.name!r} was replaced by another object "
                            "of that name")
        status = TaskRunStatus.model_validate(obj.get("status") or {})
        if status.sealed_context.store is not None:
            chunks = await self._stored(status)
        else:
            chunks = await asyncio.gather(*(self._chunk(i) for i in range(status.sealed_context.chunks)))
        messages, calls, chain = [], [], ""
        for chunk_messages, chunk_calls, sha256 in chunks:
            messages, calls, chain = messages + chunk_messages, calls + chunk_calls, chained(chain, sha256)
        if status.sealed_context.sha256 and chain != status.sealed_context.sha256:
            raise ForkError(f"the sealed chunks of TaskRun {self.plan.source.name!r} do not match its "
                            "status.sealedContext.sha256")
        return status.model_copy(update={"context_window": messages + status.context_window,
                                         "tool_call_history": calls + status.tool_call_history})

    async def _stored(self, status: TaskRunStatus) -> list[tuple[list, list, str]]:
        """The source's chunks from its external store, with the DSN the operator read for it; read only (no
        claim: the source's epoch is not the fork's)."""
        where, given = status.sealed_context.store, self.plan.source_store
        name = self.plan.source.name
        if given is None or given.location != where:
            raise ForkError(f"spec.forkOf.name: the sealed chunks of TaskRun {name!r} are in {store_name(where)}, "
                            "and the operator handed no DSN for it")
        reader = PostgresChunkStore(self.plan.source, 0, given.dsn.get_secret_value(), given.wait_seconds,
                                    where=store_name(where))
        try:
            return await reader.read_all(status.sealed_context.chunks)
        except (StoreCorrupt, StoreUnavailable) as exc:
            raise ForkError(f"cannot read the sealed chunks of TaskRun {name!r}: {exc}") from None
        finally:
            await reader.close()

    async def _chunk(self, index: int) -> tuple[list, list, str]:
        name = self.plan.source.name
        what = f"sealed chunk {part_name(name, index, 0)} of TaskRun {name!r}"
        part0 = await self._get(f"{self._configmaps}/{part_name(name, index, 0)}", what)
        try:
            chunk = described(part0)
            parts = [part0] + [await self._get(f"{self._configmaps}/{part_name(name, index, i)}", what)
                               for i in range(1, chunk.parts)]
            return *decode(chunk, [p["data"][DATA_KEY] for p in parts]), chunk.sha256
        except (KeyError, TypeError, ValueError) as exc:
            raise ForkError(f"{what} is corrupt: {exc}") from None

    async def _get(self, path: str, what: str) -> dict:
        deadline, delay = time.monotonic() + self.retry_seconds, 0.1
        while True:
            status, data = await self.rest.send("GET", path)
            if 0 < status < 400:
                return data
            if status == 404 and data.get("reason") == "NotFound":
                raise ForkError(f"spec.forkOf.name: {what} not found")
            # 401: a token the operator is renewing; 404 without a Status: an apiserver starting; 429, 5xx: busy
            transient = status in (0, 401, 404, 429) or status >= 500
            if not transient or time.monotonic() >= deadline:
                raise ForkError(f"cannot read {what}: {status} {data.get('message', '')}")
            log.warning("GET %s: %s; retrying in %.1f s", path, status, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def start(spec: RunSpec, rest: KubeREST, store: CheckpointStore, status: TaskRunStatus) -> TaskRunStatus:
    """The fork's status with the source's conversation and journal up to the fork's step, checkpointed (with an
    Event); or the run Failed with reason ForkFailed, naming what is wrong."""
    plan = spec.fork
    assert plan is not None
    fork = ForkOf(name=plan.source.name, step=plan.step, input=plan.input)
    try:
        source = await SourceReader(rest, plan).read()
        piece = cut(source.context_window, source.tool_call_history, source.context, fork, plan.source.uid,
                    spec.taskrun.uid, now_rfc3339())
    except ForkError as exc:
        await store.fail(Reason.FORK_FAILED, str(exc))
        await store.event(Reason.FORK_FAILED, f"{Phase.FAILED.value}: {exc}", warning=True)
        return enter(status, Phase.FAILED, Reason.FORK_FAILED, str(exc), now=datetime.now(timezone.utc))
    status = status.model_copy(update={"context_window": piece.messages, "tool_call_history": piece.calls,
                                       "step": piece.step, "context": piece.context,
                                       "message": f"forked from {plan.source.name} at step {plan.step}"})
    await store.save(status)
    answered = "; step's question answered with forkOf.input" if plan.input is not None else ""
    await store.event(Reason.FORKED, f"copied {len(piece.messages)} messages and {len(piece.calls)} tool calls of "
                                     f"TaskRun {plan.source.name} up to step {plan.step}{answered}")
    return status
