"""The out-of-line context format: how sealed chunks of a conversation are laid out in ConfigMaps.

Pure functions shared by the actor (which writes chunks) and the CLI (which prints transcripts).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from .v1alpha1 import ContextChunk, Message, ToolCallRecord

# A ConfigMap holds at most 1 MiB; chunks are ASCII JSON, so a part of this many characters fits with room
# to spare for metadata.
PART_CHARS = 900_000
DATA_KEY = "chunk.json"
LABEL_TASKRUN = "kubechain.dev/taskrun"
CHUNK_ANNOTATION = "kubechain.dev/chunk"  # on part 0: the chunk's ContextChunk description, JSON
EPOCH_ANNOTATION = "kubechain.dev/epoch"  # on every part: the epoch of the actor that wrote it
COMPACTION_MARKER = "kubechain-compaction"  # name of the system message marking a compaction (never sent to the LLM)


def chunk_name(taskrun: str, index: int) -> str:
    return f"{taskrun}-ctx-{index:04d}"


def part_name(taskrun: str, index: int, part: int) -> str:
    return f"{chunk_name(taskrun, index)}-{part}"


def configmaps(taskrun: str, uid: str, chunk: ContextChunk, text: str) -> list[dict[str, Any]]:
    """The ConfigMaps holding one chunk, owned by the TaskRun (garbage-collected with it); each part says which
    epoch wrote it (an actor replaces only an older epoch's leftover)."""
    owner = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "name": taskrun, "uid": uid}
    out = []
    for i, part in enumerate(split(text)):
        metadata: dict[str, Any] = {"name": f"{chunk.name}-{i}", "labels": {LABEL_TASKRUN: taskrun},
                                    "ownerReferences": [owner], "annotations": {EPOCH_ANNOTATION: str(chunk.epoch)}}
        if i == 0:
            metadata["annotations"][CHUNK_ANNOTATION] = json.dumps(chunk.model_dump(mode="json", by_alias=True))
        out.append({"metadata": metadata, "data": {DATA_KEY: part}})
    return out


def described(part0: dict[str, Any]) -> ContextChunk:
    """The chunk description carried by a chunk's first ConfigMap."""
    return ContextChunk.model_validate_json(part0["metadata"]["annotations"][CHUNK_ANNOTATION])


def encode(messages: list[Message], calls: list[ToolCallRecord]) -> str:
    """The chunk's JSON: compact, ASCII-only (so characters and bytes agree), key order fixed."""
    dump = lambda m: m.model_dump(mode="json", by_alias=True, exclude_none=True)  # noqa: E731  ("" kept as is)
    return json.dumps({"messages": [dump(m) for m in messages], "toolCalls": [dump(c) for c in calls]},
                      separators=(",", ":"), sort_keys=True)


def split(text: str) -> list[str]:
    return [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]


def describe(name: str, text: str, messages: int, calls: int, epoch: int = 0) -> ContextChunk:
    return ContextChunk(name=name, parts=len(split(text)), messages=messages, tool_calls=calls, bytes=len(text),
                        sha256=hashlib.sha256(text.encode()).hexdigest(), epoch=epoch)


def chained(previous: str, chunk_sha256: str) -> str:
    """SealedContext.sha256 once a chunk is sealed after `previous`: status vouches for every chunk in order."""
    return hashlib.sha256(f"{previous}:{chunk_sha256}".encode()).hexdigest()


def decode(chunk: ContextChunk, parts: list[str]) -> tuple[list[Message], list[ToolCallRecord]]:
    text = "".join(parts)
    if hashlib.sha256(text.encode()).hexdigest() != chunk.sha256:
        raise ValueError(f"context chunk {chunk.name} does not match its checksum")
    data: dict[str, Any] = json.loads(text)
    messages = [Message.model_validate(m) for m in data["messages"]]
    calls = [ToolCallRecord.model_validate(c) for c in data["toolCalls"]]
    if (len(messages), len(calls)) != (chunk.messages, chunk.tool_calls):
        raise ValueError(f"context chunk {chunk.name} holds a different number of entries than recorded")
    return messages, calls
