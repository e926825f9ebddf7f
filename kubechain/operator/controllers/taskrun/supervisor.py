"""The supervisor: a kopf daemon for every Running TaskRun that keeps exactly one actor on it.

Each round it looks (the run from the apiserver, then its actor in Ray), or takes the fact the last effect
answered (a RunSpec prepared, an actor created, a run returned or lost), asks the reconciler and applies the
decision. It joins a live actor (after an operator restart too), or raises the fencing epoch and starts a fresh
actor that restores from the checkpoint; it notices a dead actor the moment Ray fails its run future.
"""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, TaskRunStatus
from kubechain.core import effects as do
from kubechain.core.observation import ActorCreated, ActorPrepared, ActorQueued, Trigger
from kubechain.core.reconciler import failures_after, reconcile as decide
from kubechain.runtime.tracing import span_in

from ...observed import TRACER
from .effects import Applier
from .filters import is_running
from .handlers import RETRY_SECONDS, now
from .observe import gone, observe, ref_of

CONTINUED = (ActorPrepared, ActorQueued, ActorCreated)  # facts that carry the round on without looking again


# Stopped (the run left Running, or was deleted), it finishes the effect at hand (a status write, a kill) and exits;
# kopf cancels it only if that takes longer than the backoff.
@kopf.daemon(GROUP, VERSION, "taskruns", when=is_running, cancellation_backoff=2.0, cancellation_timeout=1.0,
             backoff=RETRY_SECONDS)
async def supervise(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    state, ref = memo.state, ref_of(body)
    state.forget(ref.uid)  # Running is seen: the scheduler's reservation and lock are done with
    applier = Applier(state, ref, kwargs, stopped)
    try:
        await _supervise(state, ref, applier, stopped, body, kwargs)
    finally:  # stopped or cancelled while waiting for an actor: its place in the line goes on
        applier.close()


async def _supervise(state: Any, ref: Any, applier: Applier, stopped: kopf.DaemonStopped, body: kopf.Body,
                     kwargs: dict[str, Any]) -> None:
    obj: dict[str, Any] = dict(body)
    status, fact, failures = TaskRunStatus(), None, 0
    while not stopped:
        if not isinstance(fact, CONTINUED):
            fresh = await state.kube.get("taskruns", ref.namespace, ref.name)
            if fresh is None or fresh["metadata"]["uid"] != ref.uid:  # deleted mid-run: stop its actor now
                seen = gone(Trigger.SUPERVISOR, ref, state, status)
                await applier.apply(seen, decide(seen, now()))
                return
            obj, status = fresh, TaskRunStatus.model_validate(fresh.get("status") or {})
            if fact is None and status.phase is Phase.RUNNING:
                fact = await applier.look(status)
                failures = failures_after(fact, failures)
        seen = observe(Trigger.SUPERVISOR, obj, state, kwargs, status=status, actor=fact, failures=failures)
        decision = decide(seen, now())
        if any(isinstance(e, do.JoinActor) for e in decision.effects):  # no span lasts as long as the run
            applied = await applier.apply(seen, decision, obj["metadata"].get("resourceVersion"))
        else:
            with span_in(status.traceparent, TRACER, "TaskRun.supervise", **{
                    "kubechain.name": ref.name, "k8s.namespace.name": ref.namespace}):
                applied = await applier.apply(seen, decision, obj["metadata"].get("resourceVersion"))
        if applied is None:  # a guarded write lost: look again
            fact = None
            continue
        if applied.exit:
            break
        status, fact = decision.status, applied.fact
        if fact is not None:
            failures = failures_after(fact, failures)
    if stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
        seen = gone(Trigger.SUPERVISOR, ref, state, status)
        await applier.apply(seen, decide(seen, now()))
