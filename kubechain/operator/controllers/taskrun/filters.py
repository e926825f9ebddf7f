"""Which TaskRuns a handler is for: kopf `when=` filters on the phase."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import Phase
from kubechain.core.lifecycle import WAITING_PHASES

from ...settings import current


def is_pending(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase", Phase.PENDING.value) == Phase.PENDING.value


def is_blocked(status: kopf.Status, **_: Any) -> bool:
    """Pending for a reason other than the admission queue (a missing Task, an Agent not ready yet)."""
    return is_pending(status) and not status.get("queuePosition")


def is_queued(status: kopf.Status, **_: Any) -> bool:
    return is_pending(status) and bool(status.get("queuePosition"))


def is_running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == Phase.RUNNING.value


def is_waiting(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") in {p.value for p in WAITING_PHASES}


def has_ended(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") in (Phase.COMPLETED.value, Phase.FAILED.value)


def is_cancelled(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return bool(spec.get("cancel")) and not has_ended(status)


def has_clock(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    """Runs that something may be due for without an event: a timeout (a Pending run's too: from its creation),
    an approval expiry, a TTL, chunks to drop (the operator's defaults where the run sets none)."""
    if has_ended(status):
        storage = current().storage
        ttl = spec.get("ttlSecondsAfterFinished")
        keep = spec.get("contextRetentionSeconds")
        sealed = status.get("sealedContext") or {}
        drops = sealed.get("chunks") and not sealed.get("droppedAt")
        return bool(storage.ttl_seconds_after_finished if ttl is None else ttl) or bool(
            drops and (storage.context_retention_seconds if keep is None else keep))
    return not is_pending(status) or spec.get("timeoutSeconds") is not None
