"""The TaskRun's kopf handlers: each parses and observes the run, asks the reconciler (kubechain/core/reconciler.py)
and applies its decision (effects.py). Nothing here decides anything.

- `reconcile`: every watch event of a run, and a retry timer for Pending runs (a missing Task or an Agent not
  ready yet: every RETRY_SECONDS; queued for a slot: 6x less often, as a freed slot wakes them).
- `keep_time` (a daemon while a run has a clock: started and not ended, Pending with a timeout, or ended with a
  TTL): sleeps until the next deadline, then the reconciler decides (Timeout, an expired approval, the TTL).
- `supervise` (supervisor.py, a daemon while a run is Running): its actor.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import kopf
from opentelemetry import trace

from kubechain.api.v1alpha1 import GROUP, VERSION, TaskRunStatus
from kubechain.core.observation import Trigger
from kubechain.core.reconciler import reconcile as decide
from kubechain.runtime.tracing import traceparent

from ... import contextstore
from ...observed import observed
from ...settings import current
from .effects import Applier
from .filters import has_clock, is_blocked, is_queued, is_waiting
from .observe import gone, observe, ref_of, with_slot

log = logging.getLogger(__name__)
RETRY_SECONDS = current().reconcile.pending_retry_seconds
ATTEMPTS = 10  # guarded writes that may lose a race with the actor's checkpoints before a handler gives up


def now() -> datetime:
    return datetime.now(timezone.utc)


@kopf.on.event(GROUP, VERSION, "taskruns")
@kopf.timer(GROUP, VERSION, "taskruns", id="retry", when=is_blocked, interval=RETRY_SECONDS, initial_delay=RETRY_SECONDS)
# A queued run starts when a freed slot wakes it; this only refreshes its place and makes good a lost wake,
# so a thousand queued runs cost a timer call per RETRY_SECONDS * 6 each, not per RETRY_SECONDS.
@kopf.timer(GROUP, VERSION, "taskruns", id="requeue", when=is_queued, interval=RETRY_SECONDS * 6,
            initial_delay=RETRY_SECONDS)
@observed("TaskRun")
async def reconcile(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    state, ref = memo.state, ref_of(body)
    applier = Applier(state, ref, kwargs)
    if kwargs.get("type") == "DELETED":
        seen = gone(Trigger.EVENT, ref, state, TaskRunStatus.model_validate(body.get("status") or {}))
        if (where := seen.status.sealed_context.store) is not None:  # its ConfigMaps go by owner reference
            state.in_background(contextstore.delete_rows(state.kube, ref.uid, where))
        await applier.apply(seen, decide(seen, now()))
        return
    if cleared := contextstore.clear_moved(state.kube, ref.namespace, ref.name, ref.uid, body.get("status") or {}):
        state.in_background(cleared)
    # Events and timers of one run run concurrently in kopf: one decision per run at a time.
    async with state.lock(ref.uid):
        obj: dict[str, Any] | None = dict(body)
        for attempt in range(ATTEMPTS):
            # A waiting run (and a second attempt) is decided from a fresh read: an event may be stale, and a
            # stale journal could create a tool Job again that was already run and deleted.
            if attempt or is_waiting(obj.get("status") or {}):
                obj = await state.kube.get("taskruns", ref.namespace, ref.name)
                if obj is None or obj["metadata"]["uid"] != ref.uid:
                    return
            seen = observe(Trigger.EVENT, obj, state, kwargs, traceparent=traceparent(trace.get_current_span()))
            seen = await with_slot(seen, state, kwargs)
            if await applier.apply(seen, decide(seen, now()), obj["metadata"].get("resourceVersion")) is not None:
                return
        log.warning("TaskRun %s/%s: %d decisions lost a race with other writers; the next event decides again",
                    ref.namespace, ref.name, ATTEMPTS)


@kopf.daemon(GROUP, VERSION, "taskruns", when=has_clock, cancellation_timeout=1.0)
async def keep_time(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """`body` is kopf's live view of the run: each round decides from the newest state the watch has seen."""
    state, ref = memo.state, ref_of(body)
    applier = Applier(state, ref, kwargs, stopped)
    while not stopped:
        seen = observe(Trigger.CLOCK, body, state, kwargs)
        applied = await applier.apply(seen, decide(seen, now()), body["metadata"].get("resourceVersion"))
        if applied is None:
            await stopped.wait(0.05)  # lost a race: the live body is about to show the newer state
        elif applied.exit:
            return
