"""The open step's answer as it streams from the LLM, held in the actor for readers (kubechain/core/livestream.py
describes the deltas and cursors).

Never written to the apiserver: the step's checkpoint stays its only write, and records what it always did. So the
buffer is memory of the open step alone, bounded (MAX_DELTAS, MAX_CHARS: past them it stops growing, says `cut`,
and readers wait for the checkpoint), and gone with the actor: after a crash the replacement asks the step again
and streams it afresh under a new `source`. A reader's call (`since`) long-polls: it returns at once when there is
something past its cursor, else when something comes or `wait` seconds pass, so one Ray call carries every delta
that arrived meanwhile, never one call per token.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from kubechain.core.livestream import Delta

MAX_DELTAS = 50_000
MAX_CHARS = 1024 * 1024


class LiveStream:
    def __init__(self, source: str | None = None):
        self.source = source or uuid.uuid4().hex[:12]
        self.step = self.attempt = 0
        self.open = self.failed = self.cut = False
        self._deltas: list[Delta] = []
        self._head: list[dict[str, Any]] = []
        self._chars = 0
        self._changed: asyncio.Event | None = None

    def begin(self, step: int, head: list[dict[str, Any]] = ()) -> None:
        """A request for `step` starts: a new attempt (the first, or after a failed one). `head`: the conversation's
        first messages (system prompt, user input) when no checkpoint holds them yet: the first step's checkpoint
        writes them with its answer, and a reader prints them before the answer it sees forming."""
        self.attempt = self.attempt + 1 if step == self.step else 1
        self.step, self.open, self.failed, self.cut, self._head = step, True, False, False, list(head)
        self._deltas, self._chars = [], 0
        self._notify()

    def end(self, failed: bool = False) -> None:
        """The request ended: answered (its checkpoint follows), or `failed` (its partial is not the step's)."""
        self.open, self.failed = False, failed
        self._notify()

    def add(self, delta: Delta) -> None:
        if not self.open or self.cut:
            return  # no step open (a compaction's summary request), or past the bounds
        size = len(delta.get("c") or "") + len(delta.get("a") or "")
        if len(self._deltas) >= MAX_DELTAS or self._chars + size > MAX_CHARS:
            self.cut = True
        else:
            self._deltas.append(delta)
            self._chars += size
        self._notify()

    def since(self, step: int, source: str, attempt: int, offset: int) -> dict[str, Any]:
        """What the stream has past a reader's cursor: from `offset` if the cursor is in the current attempt, else
        the current attempt from its start."""
        same = (step, source, attempt) == (self.step, self.source, self.attempt)
        start = min(offset, len(self._deltas)) if same else 0
        return {"step": self.step, "source": self.source, "attempt": self.attempt, "offset": start,
                "deltas": self._deltas[start:], "open": self.open, "failed": self.failed, "cut": self.cut,
                "head": self._head}

    async def wait_since(self, step: int, source: str, attempt: int, offset: int, wait: float) -> dict[str, Any]:
        batch = self.since(step, source, attempt, offset)
        if batch["deltas"] or batch["offset"] != offset or (batch["step"], batch["attempt"]) != (step, attempt):
            return batch
        changed = self._event()
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), timeout=wait)
        except asyncio.TimeoutError:
            pass
        return self.since(step, source, attempt, offset)

    def _event(self) -> asyncio.Event:
        if self._changed is None:  # made in the loop that serves the readers
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()


class NoStream(LiveStream):
    """The stream of a loop nobody reads (tests, the benchmarks' loop alone): keeps nothing."""

    def add(self, delta: Delta) -> None:
        return None
