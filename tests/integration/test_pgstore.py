"""The PostgreSQL context store (actors/pgstore.py) under the actor's checkpoint store, against a real PostgreSQL
(harness/postgres.py) and an in-memory apiserver: where chunks go, fencing, verification, waiting for a database
that went away, the move at the allowance, and the operator's deletion and sweep (kubechain/runtime/contextdb.py).
No Kubernetes stack: these run in seconds."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from pydantic import SecretStr

from actors.checkpoint import (CheckpointCorrupt, ContextStoreUnavailable, Fenced, KubeCheckpointStore,
                               StorageQuotaExceeded)
from kubechain.api.runspec import ContextStore, TaskRunRef
from kubechain.api.v1alpha1 import Phase, StoreLocation
from kubechain.runtime import contextdb
from tests.unit.test_context_layout import MemoryREST, digest, grow

pytestmark = pytest.mark.integration
WHERE = StoreLocation(namespace="ns", secret="pg")


class Apiserver(MemoryREST):
    """MemoryREST for a run of its own uid, with Events (the store posts them while it waits or moves)."""

    def __init__(self, uid: str):
        super().__init__()
        self.uid, self.events = uid, []

    async def send(self, method, path, body=None, content_type=None):
        if path.endswith("/events"):
            self.events.append(body)
            return 201, body
        status, data = await super().send(method, path, body, content_type)
        if "metadata" in data and path.endswith("/status"):
            data["metadata"]["uid"] = self.uid
        return status, data


def new_run() -> tuple[TaskRunRef, Apiserver]:
    uid = str(uuid.uuid4())
    return TaskRunRef(namespace="ns", name="big", uid=uid), Apiserver(uid)


def store_of(postgres, wait: float = 60, overflow: bool = False, dsn: str | None = None) -> ContextStore:
    return ContextStore(location=WHERE, dsn=SecretStr(dsn or postgres.dsn), wait_seconds=wait, overflow=overflow)


def rows(postgres, uid: str) -> list[tuple[int, int]]:
    with psycopg.connect(postgres.dsn) as conn:
        return conn.execute("SELECT idx, epoch FROM kubechain_chunks WHERE run_uid = %s ORDER BY idx",
                            (uid,)).fetchall()


def run_steps(ref, rest, context_store, steps: int, epoch: int = 1, allowance=(0, "")):
    async def go():
        store = KubeCheckpointStore(ref, epoch=epoch, rest=rest, allowance=allowance, context_store=context_store)
        status = (await store.load()).model_copy(update={"phase": Phase.RUNNING})
        for step in range(status.step + 1, status.step + steps + 1):
            grow(status, step)
            await store.save(status)
        await store.close()
        return status
    return asyncio.run(go())


def load(ref, rest, context_store, epoch: int = 1):
    async def go():
        store = KubeCheckpointStore(ref, epoch=epoch, rest=rest, context_store=context_store)
        try:
            return await store.load()
        finally:
            await store.close()
    return asyncio.run(go())


def test_a_5mb_2000_message_run_lives_in_the_store_and_is_rebuilt_exactly(postgres):
    ref, rest = new_run()
    status = run_steps(ref, rest, store_of(postgres), 1000)
    sealed = rest.status["sealedContext"]
    assert sealed["store"] == WHERE.to_wire() and sealed["chunks"] > 100
    assert rest.configmaps == {}  # nothing of the conversation in the apiserver but the tail
    assert len(rows(postgres, ref.uid)) == sealed["chunks"]
    assert len(json.dumps(rest.status)) < 64 * 1024
    restored = load(ref, rest, store_of(postgres))
    assert len(restored.context_window) == 2000 and digest(restored) == digest(status)
    assert sum(len(m.content or "") for m in restored.context_window) > 5_000_000


def test_a_stale_actor_can_write_no_row_once_a_newer_one_claimed_the_run(postgres):
    ref, rest = new_run()
    run_steps(ref, rest, store_of(postgres), 8)
    stale = KubeCheckpointStore(ref, epoch=1, rest=rest, context_store=store_of(postgres))
    status = asyncio.run(stale.load()).model_copy(update={"phase": Phase.RUNNING})
    rest.status["epoch"] = 2
    load(ref, rest, store_of(postgres), epoch=2)  # the new actor claims the run in the store
    before = rows(postgres, ref.uid)
    with pytest.raises(Fenced, match="newer epoch"):
        for step in range(9, 40):  # it seals a chunk no status references yet: refused all the same
            grow(status, step)
            asyncio.run(stale.save(status))
    assert rows(postgres, ref.uid) == before


def test_a_chunk_missing_or_rewritten_in_the_store_is_checkpoint_corrupt(postgres):
    ref, rest = new_run()
    run_steps(ref, rest, store_of(postgres), 12)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("UPDATE kubechain_chunks SET body = replace(body, 'x', 'y') WHERE run_uid = %s AND idx = 1",
                     (ref.uid,))
    with pytest.raises(CheckpointCorrupt, match=f"chunk 1 of run {ref.uid} in the context store is corrupt"):
        load(ref, rest, store_of(postgres))
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM kubechain_chunks WHERE run_uid = %s AND idx = 1", (ref.uid,))
    with pytest.raises(CheckpointCorrupt, match="chunk 1 of run .* is missing"):
        load(ref, rest, store_of(postgres))


def test_a_restarted_database_is_waited_for_visibly_and_nothing_is_lost(postgres):
    ref, rest = new_run()
    first = run_steps(ref, rest, store_of(postgres), 4)
    postgres.stop()
    restarter = threading.Timer(3.0, postgres.start)  # comes back while the actor waits
    restarter.start()
    try:
        status = run_steps(ref, rest, store_of(postgres), 20)
    finally:
        restarter.join()
    reasons = [e["reason"] for e in rest.events]
    assert reasons == ["ContextStoreUnavailable", "ContextStoreRecovered"]
    assert "Secret ns/pg does not answer" in rest.events[0]["message"]
    assert "contextStoreWait" not in rest.status  # cleared once it answered
    assert status.step == 24 and len(first.context_window) == 8
    assert digest(load(ref, rest, store_of(postgres))) == digest(status)


def test_past_its_wait_bound_the_run_fails_naming_the_store(postgres):
    ref, rest = new_run()
    run_steps(ref, rest, store_of(postgres), 4)
    closed = postgres.dsn.replace(f":{postgres.port}/", ":1/")  # nothing listens there
    with pytest.raises(ContextStoreUnavailable, match="Secret ns/pg does not answer.*waited 1 s"):
        run_steps(ref, rest, store_of(postgres, wait=1, dsn=closed), 20)
    assert rest.status["contextStoreWait"]["message"].startswith("the PostgreSQL context store of Secret ns/pg")
    assert postgres.password not in json.dumps(rest.status) + json.dumps(rest.events)  # never the DSN


def test_at_its_allowance_a_run_moves_its_chunks_to_the_overflow_store_and_goes_on(postgres):
    ref, rest = new_run()
    allowance = (60_000, "test")
    with pytest.raises(StorageQuotaExceeded):  # no store: it fails
        run_steps(*new_run(), None, 40, allowance=allowance)
    status = run_steps(ref, rest, store_of(postgres, overflow=True), 40, allowance=allowance)
    sealed = rest.status["sealedContext"]
    assert sealed["store"] == WHERE.to_wire() and 0 < sealed["moved"] < sealed["chunks"]
    assert [e["reason"] for e in rest.events] == ["ContextMoved"]
    assert [i for i, _ in rows(postgres, ref.uid)] == list(range(sealed["chunks"]))
    rest.configmaps.clear()  # the operator deletes the moved ConfigMaps: the run needs none of them
    assert digest(load(ref, rest, store_of(postgres, overflow=True))) == digest(status)


def test_deleting_a_run_deletes_its_rows_and_the_sweep_spares_live_and_new_runs(postgres):
    runs = [new_run() for _ in range(3)]
    for ref, rest in runs:
        run_steps(ref, rest, store_of(postgres), 8)
    (deleted, _), (gone, _), (live, _) = runs
    assert contextdb.delete_run(postgres.dsn, deleted.uid) and rows(postgres, deleted.uid) == []
    assert not contextdb.delete_run(postgres.dsn, deleted.uid)
    listed_at = datetime.now(timezone.utc)
    time.sleep(0.01)
    late, late_rest = new_run()  # written after the TaskRuns were listed: not in `live`, and spared
    run_steps(late, late_rest, store_of(postgres), 8)
    everyone = {ref.uid for ref, _ in runs}
    swept = contextdb.sweep(postgres.dsn, {live.uid} | (everyone - {gone.uid, live.uid} - {deleted.uid}), listed_at)
    assert gone.uid in swept and live.uid not in swept and late.uid not in swept
    assert rows(postgres, gone.uid) == [] and rows(postgres, live.uid) and rows(postgres, late.uid)
    assert contextdb.sweep(postgres.dsn, set(), listed_at - timedelta(days=1)) == []


def test_readers_get_verified_chunks_by_run_uid(postgres):
    ref, rest = new_run()
    status = run_steps(ref, rest, store_of(postgres), 12)
    count = rest.status["sealedContext"]["chunks"]
    chunks = contextdb.read_chunks(postgres.dsn, ref.uid, count)
    messages = [m for chunk_messages, _, _ in chunks for m in chunk_messages]
    assert messages == status.context_window[:len(messages)] and len(chunks) == count
    with pytest.raises(contextdb.StoreCorrupt, match="missing"):
        contextdb.read_chunks(postgres.dsn, str(uuid.uuid4()), 1)
