"""The one module that reads and writes TaskRun checkpoints (the TaskRun's status) and events.

Every step the actor writes the fields it owns on the status subresource: what changed since its last write
(patches.py), the bounded tail in the status and older context sealed out of line (layout.py). The loop only
sees `CheckpointStore`.

Where the sealed chunks go (actors/chunks.py): the run's ConfigMaps, or an external store (RunSpec.context_store:
PostgreSQL, actors/pgstore.py) named in status.sealedContext.store once used. A run given a store uses it from its
first chunk, unless the store is only its overflow: then, at its apiserver allowance, it copies the chunks it has
to the store, records that (sealedContext.store, .moved: the operator deletes the ConfigMaps) and goes on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, Protocol

from kubechain.api.context import DATA_KEY, EPOCH_ANNOTATION, chained, configmaps, decode, described, part_name
from kubechain.api.runspec import ContextStore, KubeCredentials, TaskRunRef
from kubechain.api.v1alpha1 import API_VERSION, GROUP, VERSION, ContextChunk, ContextStoreWait, Reason, TaskRunStatus
from kubechain.api.v1alpha1.common import now_rfc3339, rfc3339
from kubechain.core.storage import CHUNK_OVERHEAD, STATUS_MARGIN, over_message, store_name
from kubechain.runtime.contextdb import StoreCorrupt

from . import patches
from .chunks import ChunkStore
from .kubeconn import Connection, from_credentials, from_environment
from .layout import Layout, Seal
from .pgstore import PostgresChunkStore, StoreFenced, StoreUnavailable

COMPONENT = "kubechain-actor"
log = logging.getLogger(__name__)


class KubeError(Exception):
    """The apiserver refused a checkpoint or event write."""


class Conflict(Exception):
    """resourceVersion moved on since this actor last read or wrote the TaskRun."""


class RunGone(Exception):
    """The TaskRun was deleted (or replaced by a new object of the same name): stop working on it."""


class Fenced(RunGone):
    """A newer actor (higher epoch) owns the run: this one is stale and must stop without writing."""


class CheckpointCorrupt(Exception):
    """The checkpoint cannot be read back as it was written (a sealed chunk missing, rewritten or unreadable): the
    run fails with reason CheckpointCorrupt, never a restart loop."""


class StorageQuotaExceeded(Exception):
    """The next checkpoint would keep more in the apiserver than the run's allowance (RunCaps.stored_bytes): it is
    not written, and the run fails with reason StorageQuotaExceeded over its last checkpoint."""


class ContextStoreUnavailable(Exception):
    """The run's external context store did not answer within its wait bound: the run fails with reason
    ContextStoreUnavailable over its last checkpoint."""


class CheckpointStore(Protocol):
    async def load(self) -> TaskRunStatus: ...
    async def save(self, status: TaskRunStatus) -> None: ...
    async def fail(self, reason: str, message: str) -> None: ...
    async def event(self, reason: str, message: str, warning: bool = False) -> None: ...


class KubeREST:
    """The three kinds of REST calls an actor makes (see kubeconn.py), with aiohttp in the event loop: a thread hop
    per checkpoint cost ~1 ms on a busy node. A run's actor makes one with the run's credentials (`for_run`) and
    closes it when the run ends; `shared()`, with the process's own identity, is for tests and benches."""

    _shared: dict[tuple[str, str], KubeREST] = {}

    def __init__(self, connection: Connection | None = None) -> None:
        self._connection = connection or from_environment()
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def shared(cls) -> KubeREST:
        key = (os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBECONFIG", ""))
        if key not in cls._shared:
            cls._shared[key] = cls()
        return cls._shared[key]

    @classmethod
    def for_run(cls, kube: KubeCredentials | None) -> KubeREST:
        return cls(from_credentials(kube)) if kube is not None else cls.shared()

    def renew(self, kube: KubeCredentials) -> None:
        """The operator's fresh token for the run, before the one in use expires (same server, same CA)."""
        self._connection.token = kube.token.get_secret_value()

    async def send(self, method: str, path: str, body: dict | bytes | None = None,
                   content_type: str = "application/json") -> tuple[int, dict]:
        """(status, JSON body). A body already encoded (bytes) is sent as it is. Connection failures come back as
        status 0, so callers retry them like 5xx."""
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a session belongs to the loop it was made in
            connector = aiohttp.TCPConnector(ssl=self._connection.context, limit=4)
            self._session = aiohttp.ClientSession(connector=connector,
                                                  timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=30))
            self._loop = loop
        headers = {"Accept": "application/json", "Content-Type": content_type, **self._connection.headers()}
        try:
            async with self._session.request(method, self._connection.server + path, headers=headers,
                                             data=_encoded(body)) as response:
                status, data = response.status, await response.read()
        except Exception as exc:  # connection/protocol errors and timeouts: the apiserver is away
            return 0, {"message": f"{type(exc).__name__}: {exc}"}
        try:
            return status, (json.loads(data) if data else {})
        except ValueError:  # e.g. "404 page not found" from an apiserver still starting: not our JSON
            return status, {"message": data[:500].decode(errors="replace")}

    async def close(self) -> None:
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()


class ConfigMapChunks:
    """The run's ConfigMaps as its ChunkStore (the checkpoint store's own requests, its credentials)."""

    def __init__(self, store: "KubeCheckpointStore"):
        self._store = store

    async def write(self, seal: Seal) -> None:
        await self._store._write_chunk(seal)

    async def read(self, index: int) -> tuple[list, list, str]:
        return await self._store._read_chunk(index)

    async def read_all(self, count: int) -> list[tuple[list, list, str]]:
        # In parallel (a long run has a chunk every few steps); gather, unlike a TaskGroup, raises RunGone as is.
        return list(await asyncio.gather(*(self._store._read_chunk(i) for i in range(count))))

    async def drop(self, chunks: int) -> None:
        raise NotImplementedError("the operator deletes chunk ConfigMaps (an actor may not delete)")


def _encoded(body: dict | bytes | None) -> bytes | None:
    return json.dumps(body).encode() if isinstance(body, dict) else body


class KubeCheckpointStore:
    """Checkpoints in the TaskRun's status, written with the actor's own Kubernetes credentials."""

    def __init__(self, ref: TaskRunRef, epoch: int, rest: KubeREST | None = None, retry_seconds: float = 300,
                 allowance: tuple[int, str] = (0, ""), context_store: ContextStore | None = None):
        self.ref, self.epoch, self.retry_seconds = ref, epoch, retry_seconds
        self.allowance = allowance  # (bytes the run may keep in the apiserver, 0: no limit; what sets it)
        self._rest = rest or KubeREST.shared()
        self._path = f"/apis/{GROUP}/{VERSION}/namespaces/{ref.namespace}/taskruns/{ref.name}/status"
        self._configmaps = f"/api/v1/namespaces/{ref.namespace}/configmaps"
        self._version = ""  # resourceVersion of the object as this actor last wrote or read it
        self._written: patches.Fields | None = None  # what its last write left there, if it wrote since it read
        self.layout = Layout(ref.name, epoch=epoch)
        self.external = context_store
        self.chunks: ChunkStore = ConfigMapChunks(self)

    async def load(self) -> TaskRunStatus:
        """The full status: the tail in TaskRun.status with the sealed chunks in front of it."""
        status = await self._refresh()
        self.layout = Layout(self.ref.name, status.sealed_context, self.epoch)
        self.chunks = await self._select(status)
        chunks = await self._guard(self.chunks.read_all(status.sealed_context.chunks))
        messages, calls, chain = [], [], ""
        for chunk_messages, chunk_calls, sha256 in chunks:
            messages += chunk_messages
            calls += chunk_calls
            chain = chained(chain, sha256)
        if status.sealed_context.sha256 and chain != status.sealed_context.sha256:
            raise CheckpointCorrupt(f"the sealed chunks of {self.ref.name} do not match status.sealedContext.sha256: "
                                    f"a chunk was rewritten after it was sealed")
        return status.model_copy(update={"context_window": messages + status.context_window,
                                         "tool_call_history": calls + status.tool_call_history})

    async def save(self, status: TaskRunStatus) -> None:
        """Write the actor's fields (what changed since the last write, patches.py); optimistic concurrency on
        resourceVersion fences out stale actors and never writes into a different object of the same name."""
        seal, fields = self.layout.plan(status), self.layout.fields(status)
        try:
            self._check_allowance(fields, seal)
        except StorageQuotaExceeded:
            if not await self._move_out():
                raise
            fields = self.layout.fields(status)  # sealedContext says where the chunks are now
            self._check_allowance(fields, seal)
        if seal:
            await self._guard(self.chunks.write(seal))
            self.layout.sealed(seal)
            fields = self.layout.fields(status)
        while True:
            payload, content_type = patches.body(self.ref.uid, self._version, fields, self._written)
            try:
                obj = await self._call("PATCH", self._path, payload, content_type)
            except Conflict:
                await self._refresh()  # the operator wrote (e.g. the actor id): fine unless it raised the epoch
                continue
            self._version, self._written = obj["metadata"]["resourceVersion"], fields
            return

    def _check_allowance(self, fields: patches.Fields, seal: Seal | None) -> None:
        """Before any write: what the run would keep (sealed chunks with their ConfigMaps' metadata, the status's
        fields, a margin for the operator's; a seal only moves bytes from the tail to a chunk), against its
        allowance (kubechain/core/storage.py)."""
        limit, source = self.allowance
        if not limit:
            return
        chunks = 0 if self.layout.summary.store else self.layout.summary.chunks + (1 if seal else 0)
        held = 0 if self.layout.summary.store else self.layout.summary.bytes  # an external store's are not etcd's
        would = (held + CHUNK_OVERHEAD * chunks + STATUS_MARGIN + fields.size())
        if would > limit:
            raise StorageQuotaExceeded(over_message(would, limit, source))

    async def _refresh(self) -> TaskRunStatus:
        """The stored status (tail only); checks this actor still owns the run and remembers the version."""
        obj = await self._call("GET", self._path)
        status = TaskRunStatus.model_validate(obj.get("status") or {})
        self._check_owner(obj, status)
        self._version, self._written = obj["metadata"]["resourceVersion"], None  # the next write is whole
        return status

    async def _read_chunk(self, index: int) -> tuple[list, list, str]:
        """A sealed chunk's messages, calls and sha256; CheckpointCorrupt if it is missing or does not decode."""
        chunk, text = await self._read_text(index)
        try:
            return *decode(chunk, [text]), chunk.sha256
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointCorrupt(f"sealed chunk {part_name(self.ref.name, index, 0)} (chunk {index}) is corrupt: "
                                    f"{exc}") from None

    async def _read_text(self, index: int) -> tuple[ContextChunk, str]:
        """A sealed chunk's description and JSON text from its ConfigMaps."""
        name = part_name(self.ref.name, index, 0)
        try:
            part0 = await self._call("GET", f"{self._configmaps}/{name}")
            chunk = described(part0)
            parts = [part0] + [await self._call("GET", f"{self._configmaps}/{part_name(self.ref.name, index, i)}")
                               for i in range(1, chunk.parts)]
            return chunk, "".join(p["data"][DATA_KEY] for p in parts)
        except RunGone:  # a ConfigMap's 404; if the run itself was deleted, failing it fails too (RunGone)
            raise CheckpointCorrupt(f"sealed chunk {name} (chunk {index}) is missing") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointCorrupt(f"sealed chunk {name} (chunk {index}) is corrupt: {exc}") from None

    async def _write_chunk(self, seal: Seal) -> None:
        """Create the chunk's ConfigMaps, never over a newer actor's: a leftover of an older epoch (it crashed
        before its status write, so nothing references it) is replaced over the version inspected; one of this
        epoch with other content is this actor's own leftover; one of a newer epoch fences this actor out."""
        for body in configmaps(self.ref.name, self.ref.uid, seal.chunk, seal.text):
            path = f"{self._configmaps}/{body['metadata']['name']}"
            try:
                await self._call("POST", self._configmaps, body)
                continue
            except Conflict:
                there = await self._call("GET", path)
            if there.get("data") == body["data"]:
                continue  # written already (a retried request)
            epoch = int(((there.get("metadata") or {}).get("annotations") or {}).get(EPOCH_ANNOTATION) or 0)
            if epoch > self.epoch:
                raise Fenced(f"{path} was written at epoch {epoch}; this actor holds {self.epoch}")
            body["metadata"]["resourceVersion"] = there["metadata"]["resourceVersion"]
            try:
                await self._call("PUT", path, body)
            except Conflict:  # written since it was inspected: only an actor of a newer epoch replaces a leftover
                raise Fenced(f"{path} was replaced meanwhile by a newer actor") from None

    # --- the external store --------------------------------------------------------------------------------
    async def _select(self, status: TaskRunStatus) -> ChunkStore:
        """The store of the run's chunks: the one its status names; else the run's external store if it is not
        only an overflow and nothing is sealed yet (recorded from the first write on); else its ConfigMaps."""
        sealed, external = status.sealed_context, self.external
        if sealed.store is not None:
            if external is None or external.location != sealed.store:
                raise CheckpointCorrupt(f"the run's chunks are in {store_name(sealed.store)}, and this actor was "
                                        f"handed no DSN for it")
            return await self._postgres()
        if external is not None and not external.overflow and not sealed.chunks:
            self.layout.summary = sealed.model_copy(update={"store": external.location})
            return await self._postgres()
        return ConfigMapChunks(self)

    async def _postgres(self) -> PostgresChunkStore:
        assert self.external is not None
        store = PostgresChunkStore(self.ref, self.epoch, self.external.dsn.get_secret_value(),
                                   self.external.wait_seconds, self._store_waiting, store_name(self.external.location))
        await self._guard(store.claim())
        return store

    async def _move_out(self) -> bool:
        """At the allowance: copy the ConfigMap chunks to the external store, if the run has one and they are not
        there yet (True). Each keeps its text (and so its sha256 and the chain); the status written next says they
        moved, and the operator then deletes their ConfigMaps."""
        summary = self.layout.summary
        if self.external is None or summary.store is not None:
            return False
        store = await self._postgres()
        for index in range(summary.chunks):
            chunk, text = await self._read_text(index)
            await self._guard(store.write(Seal(chunk, text)))
        self.layout.summary = summary.model_copy(update={"store": self.external.location, "moved": summary.chunks})
        self.chunks = store
        await self.event(Reason.CONTEXT_MOVED, f"at its storage allowance ({self.allowance[0]} bytes): "
                         f"{summary.chunks} sealed chunks moved to {store_name(self.external.location)}")
        return True

    async def _guard(self, work: Any) -> Any:
        """The store's failures as this module's: fenced, corrupt, or away past the run's bound."""
        try:
            return await work
        except StoreFenced as exc:
            raise Fenced(str(exc)) from None
        except StoreCorrupt as exc:
            raise CheckpointCorrupt(str(exc)) from None
        except StoreUnavailable as exc:
            raise ContextStoreUnavailable(str(exc)) from None

    async def _store_waiting(self, error: str | None, deadline: float) -> None:
        """Say on the run that its store does not answer (status.contextStoreWait, a Warning), or answers again."""
        wait = None if error is None else ContextStoreWait(
            since=now_rfc3339(), until=rfc3339(datetime.fromtimestamp(deadline, timezone.utc)), message=error)
        while True:
            body = {"metadata": {"uid": self.ref.uid, "resourceVersion": self._version},
                    "status": {"contextStoreWait": wait.to_wire() if wait else None}}
            try:
                obj = await self._call("PATCH", self._path, body, "application/merge-patch+json")
                break
            except Conflict:
                await self._refresh()
        self._version, self._written = obj["metadata"]["resourceVersion"], None  # the next write is whole
        if wait is not None:
            await self.event(Reason.CONTEXT_STORE_UNAVAILABLE, f"{error}; the run waits until {wait.until}",
                             warning=True)
        else:
            await self.event(Reason.CONTEXT_STORE_RECOVERED, "the context store answers again; the run goes on")

    async def close(self) -> None:
        if isinstance(self.chunks, PostgresChunkStore):
            await self.chunks.close()

    def _check_owner(self, obj: dict, status: TaskRunStatus) -> None:
        if obj["metadata"]["uid"] != self.ref.uid:
            raise RunGone(f"TaskRun {self.ref.namespace}/{self.ref.name} was replaced")
        if status.epoch != self.epoch:
            raise Fenced(f"TaskRun {self.ref.namespace}/{self.ref.name} is at epoch {status.epoch}, "
                         f"this actor holds {self.epoch}")

    async def fail(self, reason: str, message: str) -> None:
        """End the run Failed without rewriting its conversation (the checkpoint could not be read back, so the
        actor has only the tail): phase, phaseHistory, error and message, over the version just read."""
        from datetime import datetime, timezone

        from kubechain.api.v1alpha1 import Phase
        from kubechain.core.lifecycle import enter

        status = (await self._refresh()).model_copy(update={"error": message})
        failed = enter(status, Phase.FAILED, reason, message, now=datetime.now(timezone.utc))
        body = {"metadata": {"uid": self.ref.uid, "resourceVersion": self._version},
                "status": failed.to_wire(include={"phase", "phase_history", "error", "message"})}
        await self._call("PATCH", self._path, body, "application/merge-patch+json")

    async def event(self, reason: str, message: str, warning: bool = False) -> None:
        now = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{self.ref.name}.", "namespace": self.ref.namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": "TaskRun", "name": self.ref.name,
                               "namespace": self.ref.namespace, "uid": self.ref.uid},
            "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{self.ref.namespace}/events", body)
        except (RunGone, KubeError) as exc:  # an Event is best effort; the status already says it all
            log.warning("event %s not posted: %s", reason, exc)

    async def _call(self, method: str, path: str, body: dict | bytes | None = None,
                    content_type: str = "application/json") -> dict:
        """One request; an unreachable or failing apiserver is retried with backoff for `retry_seconds`."""
        deadline, delay = time.monotonic() + self.retry_seconds, 0.1
        while True:
            status, data = await self._rest.send(method, path, body, content_type)
            if 0 < status < 400:
                return data
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            # A Status NotFound is our TaskRun gone; a bare "404 page not found" is an apiserver still starting.
            gone = status == 404 and isinstance(data, dict) and data.get("reason") == "NotFound"
            if gone or (status in (409, 422) and "uid" in message.lower()):
                raise RunGone(f"TaskRun {self.ref.namespace}/{self.ref.name}: {status} {message}")
            if status == 409:
                raise Conflict(message)
            # 401: the run's token expired while the operator was away; it hands a fresh one when it joins again.
            # 403: a restarted apiserver refuses service-account tokens until its RBAC caches are filled (seconds);
            # a real lack of rights is still reported once retry_seconds have passed.
            transient = status in (0, 401, 403, 404, 429) or (status >= 500 and "too large" not in message)
            if transient and time.monotonic() < deadline:
                log.warning("%s %s: %s %s; retrying in %.1f s", method, path, status, message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            raise KubeError(f"{method} {path}: {status} {message}")
