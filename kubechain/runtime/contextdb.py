"""The PostgreSQL context store's tables and the control plane's few uses of them: readers (kubechain transcript,
the console) read a run's chunks, the operator deletes a run's rows and sweeps those of runs that are gone.
Writes belong to the run's actor (actors/pgstore.py), fenced by epoch.

Two tables, keyed by the run's uid (a TaskRun's uid is never reused, so a new run of the same name never sees an
old run's rows):
  kubechain_runs    one row per run: its namespace/name (for people), the highest epoch that claimed it (an
                    actor of a lower epoch can write nothing: every write takes this row's lock and checks it),
                    and when it was first written (the sweep spares rows newer than its TaskRun listing);
  kubechain_chunks  one row per sealed chunk: (run uid, index), the epoch that wrote it, the chunk's description
                    (ContextChunk JSON: sha256, counts) and its JSON text, checked against the sha256 on every read.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from kubechain.api.context import decode
from kubechain.api.v1alpha1 import ContextChunk, Message, ToolCallRecord

SCHEMA_LOCK = 7_245_024  # a transaction-level advisory lock: two first writers do not create the tables at once
SCHEMA = """
CREATE TABLE IF NOT EXISTS kubechain_runs (
    run_uid    text PRIMARY KEY,
    namespace  text NOT NULL,
    taskrun    text NOT NULL,
    epoch      integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS kubechain_chunks (
    run_uid text NOT NULL REFERENCES kubechain_runs (run_uid) ON DELETE CASCADE,
    idx     integer NOT NULL,
    epoch   integer NOT NULL,
    sha256  text NOT NULL,
    chunk   text NOT NULL,
    body    text NOT NULL,
    PRIMARY KEY (run_uid, idx)
);
"""
# Claim the run for `epoch`: raises the stored epoch, never lowers it; no row back means a newer actor holds it.
# The row stays locked until the transaction ends, so a chunk write and its fence check are one.
CLAIM = """
INSERT INTO kubechain_runs (run_uid, namespace, taskrun, epoch) VALUES (%(uid)s, %(namespace)s, %(name)s, %(epoch)s)
ON CONFLICT (run_uid) DO UPDATE SET epoch = EXCLUDED.epoch WHERE kubechain_runs.epoch <= EXCLUDED.epoch
RETURNING epoch
"""
# Write once: the same chunk again is a no-op (a retried write); other content at that index can only be a leftover
# of this or an older epoch (the claim above refused newer ones) that no status references: replaced.
WRITE_CHUNK = """
INSERT INTO kubechain_chunks (run_uid, idx, epoch, sha256, chunk, body)
VALUES (%(uid)s, %(idx)s, %(epoch)s, %(sha256)s, %(chunk)s, %(body)s)
ON CONFLICT (run_uid, idx) DO UPDATE SET epoch = EXCLUDED.epoch, sha256 = EXCLUDED.sha256, chunk = EXCLUDED.chunk,
    body = EXCLUDED.body
WHERE kubechain_chunks.sha256 <> EXCLUDED.sha256
"""
READ_CHUNKS = "SELECT idx, chunk, body FROM kubechain_chunks WHERE run_uid = %s AND idx < %s ORDER BY idx"
DELETE_RUN = "DELETE FROM kubechain_runs WHERE run_uid = %s"
RUN_UIDS = "SELECT run_uid FROM kubechain_runs WHERE created_at < %s"
TABLES_EXIST = "SELECT to_regclass('kubechain_runs') IS NOT NULL"


class StoreCorrupt(ValueError):
    """A chunk is missing from the store or does not match its description."""


def verified(uid: str, count: int, rows: Iterable[tuple[int, str, str]]
             ) -> list[tuple[list[Message], list[ToolCallRecord], str]]:
    """The first `count` chunks of run `uid` from their rows (index order), each checked against its own sha256
    and counts; StoreCorrupt naming the first missing or different one. The chain over them is the caller's."""
    out = []
    for expected, (idx, description, body) in enumerate(rows):
        if idx != expected:
            break
        chunk = ContextChunk.model_validate_json(description)
        try:
            messages, calls = decode(chunk, [body])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorrupt(f"chunk {idx} of run {uid} in the context store is corrupt: {exc}") from None
        out.append((messages, calls, chunk.sha256))
    if len(out) != count:
        raise StoreCorrupt(f"chunk {len(out)} of run {uid} is missing from the context store "
                           f"({len(out)} of {count} found)")
    return out


def _connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def read_chunks(dsn: str, uid: str, count: int) -> list[tuple[list[Message], list[ToolCallRecord], str]]:
    """A run's first `count` chunks, verified (readers; the caller decided the reader may see the run)."""
    with _connect(dsn) as conn:
        if not conn.execute(TABLES_EXIST).fetchone()[0]:
            raise StoreCorrupt(f"the context store has no kubechain tables: run {uid}'s chunks are not there")
        return verified(uid, count, conn.execute(READ_CHUNKS, (uid, count)).fetchall())


def delete_run(dsn: str, uid: str) -> bool:
    """Delete a run's rows (its chunks go with its kubechain_runs row); False if it had none."""
    with _connect(dsn) as conn:
        if not conn.execute(TABLES_EXIST).fetchone()[0]:
            return False
        return conn.execute(DELETE_RUN, (uid,)).rowcount > 0


def sweep(dsn: str, live: set[str], listed_at: datetime) -> list[str]:
    """Delete the rows of every run not in `live` (the uids of the TaskRuns listed at `listed_at`) that were first
    written before that listing: a run created since is not in it, and is spared. Returns the uids deleted."""
    with _connect(dsn) as conn:
        if not conn.execute(TABLES_EXIST).fetchone()[0]:
            return []
        gone = [uid for (uid,) in conn.execute(RUN_UIDS, (listed_at,)).fetchall() if uid not in live]
        for uid in gone:
            conn.execute(DELETE_RUN, (uid,))
        return gone
