"""The per-namespace cap on bytes kubechain keeps in the apiserver (TaskRun status and sealed chunk ConfigMaps: all
of it lands in etcd), as pure arithmetic over what the operator's watch shows. Settings: KUBECHAIN_MAX_NAMESPACE_
STORED_BYTES (a Namespace's annotation kubechain.dev/max-stored-bytes overrides it) and KUBECHAIN_MAX_RUN_STORED_BYTES.

How the cap holds:
  1. Each run gets an allowance, min(KUBECHAIN_MAX_RUN_STORED_BYTES, the namespace's cap), in its RunSpec; its actor
     refuses a checkpoint that would take the run past it (the run fails with reason StorageQuotaExceeded).
  2. A run that has started and not ended reserves its allowance (or what it holds, if more: the few bytes of its
     final write); an ended run counts what it holds; a queued run's status (its queue message) is not counted.
  3. A run starts only if its allowance fits under the cap beside what the namespace's runs reserve (runs this
     operator admitted but has not yet seen started reserve theirs too); otherwise it waits in the queue, saying so.
So the bytes held in a namespace stay under its cap plus, per started run, the margin of its final write
(STATUS_MARGIN) and the operator's own status fields; concurrent runs each use at most their allowance. A lowered
cap deletes nothing: new runs wait until runs end and are deleted (ttlSecondsAfterFinished) or their chunks are
dropped (contextRetentionSeconds).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from kubechain.api.v1alpha1 import GROUP, StoreLocation

ANNOTATION_MAX_STORED_BYTES = f"{GROUP}/max-stored-bytes"  # on a Namespace (a cluster admin's): its cap
CHUNK_OVERHEAD = 1024  # a chunk ConfigMap's metadata (names, labels, owner, the chunk's description)
STATUS_MARGIN = 4096   # the status fields the operator writes (conditions...) and a run's final failure write


@dataclass(frozen=True)
class Held:
    """What one TaskRun keeps in the apiserver, as the watch shows it."""
    uid: str
    bytes: int
    active: bool  # started and not ended: it may still grow, up to its allowance


def stored_bytes(status: dict[str, Any]) -> int:
    """Bytes a TaskRun status (wire form) and its sealed chunks take: the status's JSON, the chunks' JSON and
    their ConfigMaps' metadata (none once dropped, or when they are in an external store)."""
    sealed = status.get("sealedContext") or {}
    external = bool(sealed.get("store"))  # chunks in an external store take nothing of etcd
    chunks = 0 if sealed.get("droppedAt") or external else int(sealed.get("bytes") or 0) \
        + CHUNK_OVERHEAD * int(sealed.get("chunks") or 0)
    return len(json.dumps(status, separators=(",", ":"))) + chunks


def cap_of(annotation: str | None, default: int) -> tuple[int, str]:
    """A namespace's cap (0: none) and what sets it: its annotation (an integer), else the operator's default."""
    if annotation is not None and annotation.strip().isdigit():
        return int(annotation), f"annotation {ANNOTATION_MAX_STORED_BYTES}"
    return default, "KUBECHAIN_MAX_NAMESPACE_STORED_BYTES"


def allowance(cap: int, run_bytes: int) -> int:
    """What one run of a namespace with `cap` may keep (0: no limit)."""
    if not cap:
        return run_bytes
    return min(cap, run_bytes) if run_bytes else cap


def reserved(runs: Iterable[Held], each: int, admitted: int = 0) -> int:
    """Bytes the namespace's runs hold or may still take: started runs their allowance `each` (or more if they
    hold more), the others what they hold; `admitted` runs not yet seen started reserve `each` too."""
    return sum(max(r.bytes, each) if r.active else r.bytes for r in runs) + admitted * each


def room(cap: int, taken: int, each: int) -> int | None:
    """How many more runs may start under the cap (None: no cap)."""
    if not cap:
        return None
    return max(0, cap - taken) // max(each, 1)


def full_message(namespace: str, cap: int, taken: int, source: str) -> str:
    return (f"storage cap of namespace {namespace}: its runs hold or reserve {taken} of {cap} bytes in the "
            f"apiserver ({source}); a run starts once others end and are deleted or their chunks dropped")


def over_message(would: int, limit: int, source: str) -> str:
    """The error of a run whose next checkpoint would pass its allowance."""
    return (f"the run's next checkpoint would keep {would} bytes in the apiserver (status and sealed chunks), over "
            f"its allowance of {limit} bytes ({source}); configure an external context store to keep longer runs")


def store_name(location: StoreLocation) -> str:
    """How messages name an external store: by its Secret (the DSN holds a password)."""
    return f"the {location.kind} context store of Secret {location.namespace}/{location.secret}"
