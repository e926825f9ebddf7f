"""Where sealed context chunks live: the run's ConfigMaps (checkpoint.py ConfigMapChunks, over KubeCheckpointStore's
`_write_chunk`/`_read_chunk`) or an external store selected by contextStorageRef (pgstore.py: PostgreSQL); the
TaskRun status keeps the same bounded tail, `sealedContext` (counts, the sha256 chain, and `store`: where the
chunks are) and nothing else.

What any store must keep, as the ConfigMaps do (actors/checkpoint.py, kubechain/api/context.py):
  - written once, never rewritten: a chunk (run uid, index) of a newer epoch is never replaced; one of an older
    epoch only if nothing references it (its writer crashed before its status write), else the writer is Fenced;
  - verified on load: each chunk against its own sha256, all of them against sealedContext.sha256 (the chain);
    missing or different is CheckpointCorrupt, never a restart loop;
  - deleted with the run: keyed by the run's uid, so the operator can delete what no TaskRun has any more, also
    after it was down when the run went (a sweep against the TaskRuns it lists);
  - readable by `kubechain transcript` and the console with the reader's own rights (the store must answer only
    those who may read the TaskRun).
Chunks held by an external store do not count against the run's apiserver allowance (kubechain/core/storage.py):
only its status does.
"""
from __future__ import annotations

from typing import Protocol

from kubechain.api.v1alpha1 import Message, ToolCallRecord

from .layout import Seal


class ChunkStore(Protocol):
    async def write(self, seal: Seal) -> None:
        """Keep a sealed chunk (Seal.chunk says its name, epoch and sha256) before the status that references it;
        a retried write of the same chunk is a no-op; Fenced if a newer epoch wrote that chunk."""

    async def read(self, index: int) -> tuple[list[Message], list[ToolCallRecord], str]:
        """Chunk `index`'s messages, tool calls and sha256, checked against its description; CheckpointCorrupt if
        it is missing or does not match."""

    async def read_all(self, count: int) -> list[tuple[list[Message], list[ToolCallRecord], str]]:
        """Chunks 0..count-1, in order, each as `read` gives it."""

    async def drop(self, chunks: int) -> None:
        """Delete the run's chunks (contextRetentionSeconds, or the run was deleted)."""
