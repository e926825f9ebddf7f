"""Port ranges that Ray heads side by side on one machine must not share (the suite's pytest-xdist workers each run
stacks, another session may run its own): a block is held by an flock on its file while its holder runs, so a
holder that dies frees it (the kernel drops the lock) and nothing is left to clean up."""
from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

LOCKS = Path("/tmp/kubechain-port-blocks")


class PortBlock:
    """Block `index` of `kind`, held until `release()` (or the holder's exit)."""

    def __init__(self, kind: str, index: int, lock: IO[str]) -> None:
        self.kind, self.index, self._lock = kind, index, lock

    def release(self) -> None:
        self._lock.close()


def claim(kind: str, blocks: int) -> PortBlock | None:
    """The first free one of `kind`'s `blocks` blocks, now held; None if every one is. The lock file's descriptor is
    not inherited (PEP 446): the processes a holder starts never keep its block."""
    LOCKS.mkdir(exist_ok=True)
    for index in range(blocks):
        lock = open(LOCKS / f"{kind}-{index}", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return PortBlock(kind, index, lock)
    return None
