"""Where each part of a checkpoint goes: the bounded tail in TaskRun.status, the rest in sealed chunks.

Pure bookkeeping (no I/O): it remembers how much of the conversation is sealed and decides, after
each step, whether to seal more, so the status written per step stays small whatever the length
of the conversation, and every byte is written out of line exactly once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubechain.api.context import chained, chunk_name, describe, encode
from kubechain.api.v1alpha1 import ContextChunk, Message, SealedContext, TaskRunStatus, ToolCallRecord

from .patches import NULL, Fields

# The apiserver's work per status write grows with the object: ~1 ms of CPU per KB of tail on the local 1.20
# apiserver, on top of ~5 ms for any write. A seal is one more write (a ConfigMap). For a tail growing g KB per
# step that makes ~(SEAL + KEEP) / 2 + 5 * g / (SEAL - KEEP) ms per step on average: 6 KB / 1 KB is near the least
# for steps of 0.5-5 KB (16 KB / 4 KB cost ~5 ms more per step in a long run of small tool calls).
SEAL_BYTES = 6 * 1024    # a tail above this is sealed ...
SEAL_MESSAGES = 64
KEEP_BYTES = 1024        # ... down to the newest messages within these bounds,
KEEP_MESSAGES = 8
KEEP_CALLS = 8           # and the newest finished tool calls within KEEP_BYTES (open ones always stay: the journal)
SMALL_FIELDS = {"phase", "message", "step", "phase_history", "output", "error", "usage", "context", "cost", "currency",
                "tree_usage", "tree_cost"}


@dataclass(frozen=True)
class Seal:
    """A chunk to write before the status that references it."""
    chunk: ContextChunk
    text: str


def _text(wire: Any) -> str:
    """JSON as written (ASCII: its length is its size in bytes)."""
    return json.dumps(wire, separators=(",", ":"))


class Layout:
    def __init__(self, taskrun: str, sealed: SealedContext | None = None, epoch: int = 0):
        self.taskrun, self.epoch = taskrun, epoch
        self.summary = sealed or SealedContext()
        # Messages never change once appended, nor calls once finished: each is encoded once, to the text that
        # both measures it here and goes into every write (patches.py) until it is sealed.
        self._wire: dict[int, str] = {}
        self._calls: dict[int, tuple[ToolCallRecord, str]] = {}

    def plan(self, status: TaskRunStatus) -> Seal | None:
        """The chunk to seal now, if the tail has grown past its bounds."""
        messages = status.context_window
        tail = range(self.sealed_messages, len(messages))
        sizes = [len(self._wired(messages, i)) for i in tail]
        history = status.tool_call_history
        call_sizes = [len(self._call_wired(history, i)) for i in range(self.sealed_calls, len(history))]
        if sum(sizes) + sum(call_sizes) <= SEAL_BYTES and len(sizes) <= SEAL_MESSAGES:
            return None
        keep = kept = 0
        for size in reversed(sizes):
            if keep == KEEP_MESSAGES or kept + size > KEEP_BYTES:
                break
            keep, kept = keep + 1, kept + size
        cut_messages = len(messages) - keep
        cut_calls = self.sealed_calls
        calls_bytes = sum(call_sizes)
        while (cut_calls < len(history) and history[cut_calls].state.finished
               and (len(history) - cut_calls > KEEP_CALLS or calls_bytes > KEEP_BYTES)):
            calls_bytes -= call_sizes[cut_calls - self.sealed_calls]
            cut_calls += 1
        if (cut_messages, cut_calls) == (self.sealed_messages, self.sealed_calls):
            return None
        sealed_m = messages[self.sealed_messages:cut_messages]
        sealed_c = status.tool_call_history[self.sealed_calls:cut_calls]
        text = encode(sealed_m, sealed_c)
        return Seal(describe(chunk_name(self.taskrun, self.summary.chunks), text, len(sealed_m), len(sealed_c),
                             self.epoch), text)

    def _wired(self, messages: list[Message], i: int) -> str:
        if i not in self._wire:
            self._wire[i] = _text(messages[i].to_wire())
        return self._wire[i]

    def _call_wired(self, calls: list[ToolCallRecord], i: int) -> str:
        cached = self._calls.get(i)
        if cached is not None and cached[0] is calls[i]:
            return cached[1]
        text = _text(calls[i].to_wire())
        if calls[i].state.finished:
            self._calls[i] = (calls[i], text)
        return text

    @property
    def sealed_messages(self) -> int:
        return self.summary.messages

    @property
    def sealed_calls(self) -> int:
        return self.summary.tool_calls

    def sealed(self, seal: Seal) -> None:
        """Record a chunk as written."""
        for i in range(self.sealed_messages, self.sealed_messages + seal.chunk.messages):
            self._wire.pop(i, None)
        for i in range(self.sealed_calls, self.sealed_calls + seal.chunk.tool_calls):
            self._calls.pop(i, None)
        self.summary = self.summary.model_copy(update=dict(  # its store (where) stays
            chunks=self.summary.chunks + 1, messages=self.sealed_messages + seal.chunk.messages,
            tool_calls=self.sealed_calls + seal.chunk.tool_calls, bytes=self.summary.bytes + seal.chunk.bytes,
            # a run sealed before chunks were chained stays unchained (nothing to vouch from)
            sha256=chained(self.summary.sha256, seal.chunk.sha256)
            if self.summary.sha256 or not self.summary.chunks else ""))

    def fields(self, status: TaskRunStatus) -> Fields:
        """What goes into TaskRun.status: small fields, the unsealed tail and the chunk references."""
        small = {name: _text(value) for name, value in status.to_wire(include=SMALL_FIELDS).items()}
        small["sealedContext"] = _text(self.summary.to_wire())
        small["llmRetry"] = _text(status.llm_retry.to_wire()) if status.llm_retry else NULL  # the episode ended
        if status.actor is None:
            small["actor"] = NULL  # let go of (a back-off): no actor holds it
        messages, calls = status.context_window, status.tool_call_history
        return Fields(small, (self.sealed_messages, self.sealed_calls),
                      [self._wired(messages, i) for i in range(self.sealed_messages, len(messages))],
                      [self._call_wired(calls, i) for i in range(self.sealed_calls, len(calls))])
