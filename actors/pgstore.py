"""The PostgreSQL ChunkStore (actors/chunks.py): a run's sealed chunks as rows keyed by its uid (tables and SQL in
kubechain/runtime/contextdb.py), written with the DSN the operator handed in the RunSpec.

Guarantees, as the ConfigMaps give them:
  - fenced by epoch: `claim()` (at load) raises the run's row to this actor's epoch, and every chunk write takes
    that row's lock and checks it first in the same transaction: once a newer actor claimed the run, a stale one
    cannot write a single row (Fenced), not even a chunk no status references yet;
  - written once: the same chunk again is a no-op; another chunk at an index is only ever a leftover of this or an
    older epoch that no status references (the status is written after its chunk), and is replaced;
  - verified on load: each chunk against its own sha256 and counts (contextdb.verified), the chain by the caller.
A store that does not answer (connection refused, server restarting) is waited for, visibly: `waiting` is told when
the wait starts and ends (the checkpoint store writes status.contextStoreWait and posts Events), and past
`wait_seconds` the operation raises StoreUnavailable (the run fails with reason ContextStoreUnavailable). Nothing
is lost meanwhile: the step's status is written only after its chunk is.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import Message, ToolCallRecord
from kubechain.runtime import contextdb

from .layout import Seal

log = logging.getLogger(__name__)

Waiting = Callable[[str | None, float], Awaitable[None]]  # (the store's error, None: it answers again; deadline)


class StoreUnavailable(Exception):
    """The external context store did not answer within the run's wait bound."""


class StoreFenced(Exception):
    """A newer actor claimed the run in the store (checkpoint.py turns it into Fenced)."""


class PostgresChunkStore:
    def __init__(self, ref: TaskRunRef, epoch: int, dsn: str, wait_seconds: float = 600,
                 waiting: Waiting | None = None, where: str = "PostgreSQL"):
        self.ref, self.epoch, self.wait_seconds = ref, epoch, wait_seconds
        self.where = where  # how messages name the store: its Secret, never the DSN (it holds the password)
        self._dsn, self._waiting = dsn, waiting
        self._conn: Any = None
        self._schema = False
        self._lock = asyncio.Lock()  # one connection, one operation at a time

    async def claim(self) -> None:
        """Raise the run's row to this actor's epoch (StoreFenced if a newer one holds it)."""
        async def claim(conn: Any) -> None:
            async with conn.transaction():
                await self._claim(conn)
        await self._run(claim)

    async def write(self, seal: Seal) -> None:
        chunk = seal.chunk

        async def write(conn: Any) -> None:
            async with conn.transaction():
                await self._claim(conn)
                await conn.execute(contextdb.WRITE_CHUNK, {
                    "uid": self.ref.uid, "idx": _index(chunk.name), "epoch": self.epoch, "sha256": chunk.sha256,
                    "chunk": chunk.model_dump_json(by_alias=True), "body": seal.text})
        await self._run(write)

    async def read_all(self, count: int) -> list[tuple[list[Message], list[ToolCallRecord], str]]:
        """The run's first `count` chunks, each verified; StoreCorrupt if one is missing or different."""
        if not count:
            return []

        async def read(conn: Any) -> list[tuple[int, str, str]]:
            cursor = await conn.execute(contextdb.READ_CHUNKS, (self.ref.uid, count))
            return await cursor.fetchall()
        return contextdb.verified(self.ref.uid, count, await self._run(read))

    async def read(self, index: int) -> tuple[list[Message], list[ToolCallRecord], str]:
        return (await self.read_all(index + 1))[index]

    async def drop(self, chunks: int) -> None:
        async def drop(conn: Any) -> None:
            await conn.execute(contextdb.DELETE_RUN, (self.ref.uid,))
        await self._run(drop)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _claim(self, conn: Any) -> None:
        cursor = await conn.execute(contextdb.CLAIM, {"uid": self.ref.uid, "namespace": self.ref.namespace,
                                                      "name": self.ref.name, "epoch": self.epoch})
        if await cursor.fetchone() is None:
            raise StoreFenced(f"run {self.ref.name} was claimed in {self.where} by an actor of a newer epoch; "
                              f"this one holds {self.epoch}")

    async def _run(self, operation: Callable[[Any], Awaitable[Any]]) -> Any:
        """`operation` on the connection, reconnecting and retrying while the store does not answer, up to
        wait_seconds from the first failure; `waiting` hears when that starts and when it is over."""
        import psycopg

        deadline, delay, failed = 0.0, 0.2, False
        async with self._lock:
            while True:
                try:
                    result = await operation(await self._connection())
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    await self.close()
                    reason = " ".join(str(exc).split())[:300]  # one line (libpq's have hints on the next)
                    error = f"{self.where} does not answer: {type(exc).__name__}: {reason}"
                    if not failed:
                        failed, deadline = True, time.time() + self.wait_seconds
                        log.warning("%s; waiting up to %.0f s", error, self.wait_seconds)
                        if self._waiting is not None:
                            await self._waiting(error, deadline)
                    if time.time() >= deadline:
                        raise StoreUnavailable(f"{error}; waited {self.wait_seconds:.0f} s "
                                               f"(KUBECHAIN_CONTEXT_STORE_WAIT_SECONDS)") from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if failed and self._waiting is not None:
                    await self._waiting(None, deadline)
                return result

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        if not self._schema:
            async with self._conn.transaction():
                await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (contextdb.SCHEMA_LOCK,))
                await self._conn.execute(contextdb.SCHEMA)
            self._schema = True
        return self._conn


def _index(chunk_name: str) -> int:
    """The chunk's index from its name (`<taskrun>-ctx-<index>`, kubechain/api/context.py chunk_name)."""
    return int(chunk_name.rsplit("-", 1)[1])
