"""The TaskRun reconciler: one pure function from what the operator observed, and the time, to a Decision.

    reconcile(Observed, now) -> Decision(status: the whole new status, effects: what to do, guarded)

Who asks (`Trigger`), and what each one owns, is the operator's half of kubechain/core/lifecycle.py's diagram:
- EVENT (a watch event of the run, or its retry timer): Pending -> Running (Scheduled), the waits (children,
  Jobs, replies; back to Running), stops (Cancelled), and the books of every phase (conditions Succeeded and
  ResponsesValid, the Task's view, metrics, tool Jobs to delete, the parent to wake).
- CLOCK (a daemon of every started run): Timeout, expired approvals, deletion after ttlSecondsAfterFinished.
- SUPERVISOR (a daemon of every Running run): exactly one actor on the run. Its rounds are facts that the
  effects answer: look -> ActorAbsent -> PrepareActor -> ActorPrepared -> (epoch raised) CreateActor ->
  [ActorQueued -> (said) CreateActor ->] ActorCreated -> (actor recorded) JoinActor -> ActorReturned | ActorLost | ActorWedged | RayDown -> look again.
  A found actor (an operator restart, a clean return) is joined, never replaced.

Nothing here reads the clock, the network or the process: every input is in `Observed`, every output in the
Decision. The applier writes the status when it differs from the observed one, then applies the effects in
order; a guarded write that loses a race applies nothing, and the caller observes again.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import assert_never

from kubechain.api.v1alpha1 import ActorRef, CallState, Crashes, ForkedFrom, Phase, Reason, TaskRunSpec, TaskRunStatus, WaitingFor
from kubechain.api.v1alpha1.common import parse_rfc3339, rfc3339

from . import effects as do
from .blocking import blocked, failed, refused_delegations, unblocked
from .builders import child_budget, child_taskrun, tool_job
from .fork import label_value, source_problem
from .lifecycle import (Gathered, JobOutcome, Stop, context_drop_at, deletion_at, enter, gather_inputs, llm_retry_at,
                        next_deadline, stop_for)
from .naming import LABEL_AGENT, LABEL_FORKED_FROM, actor_name
from .run_conditions import context_store_available, llm_available, ray_available, responses_valid, succeeded
from .actorline import WAITING, waiting_message
from .observation import (FAILURES, ActorAbsent, ActorCreated, ActorFact, ActorFound, ActorLost, ActorPrepared,
                          ActorQueued, ActorReturned, ActorWedged, Admitted, CannotStart, Decision, InQueue, Observed, RayDown,
                          Trigger)

CLOCK_SECONDS = 5.0        # the longest the clock sleeps before it looks at the run again
ENDED_CLOCK_SECONDS = 300.0  # ... at an ended run (every one has a clock for its TTL: a changed TTL shows this late)
RETURNED_SECONDS = 0.2     # an actor returned but the run is still Running (e.g. a fenced actor): look again soon
MAX_BACKOFF_SECONDS = 5.0  # attempts are cheap (Ray is probed with a TCP connect first): come back soon
RETRY_TURN_SECONDS = 0.5  # a run waiting for a turn to start its LLM attempt looks again (a turn lasts ~a start)
CRASH_BACKOFF_SECONDS = 30.0  # a crashing step costs a process and an LLM request per attempt: back off further


def reconcile(seen: Observed, now: datetime) -> Decision:
    """The next step for one TaskRun."""
    status = seen.status
    if not seen.exists:
        return _gone(seen)
    if seen.trigger is Trigger.SUPERVISOR and status.phase is not Phase.RUNNING:
        # The run left Running: wait for kopf to stop the supervisor (its filter no longer matches). A daemon
        # that returns on its own is never started again for the run, and a resumed run needs one.
        return Decision(status, (do.Sleep(CLOCK_SECONDS),))
    if seen.spec is None:
        return _invalid(seen)
    # any phase not ended --Cancelled (spec.cancel: an event) / Timeout (the clock)--> Failed
    cancel = seen.parsed.cancel and seen.trigger is Trigger.EVENT
    if seen.trigger is not Trigger.SUPERVISOR and (stop := stop_for(seen.parsed, cancel, status, now, seen.created)):
        decision = _stopped(seen, stop, now)
    else:
        decision = _by_phase(seen, now)
    if seen.trigger is Trigger.EVENT:
        decision = _books(seen, decision, now)
    elif seen.trigger is Trigger.CLOCK:
        decision = _next_tick(seen, decision, now)
    return decision


def _by_phase(seen: Observed, now: datetime) -> Decision:
    match seen.status.phase:
        case Phase.PENDING:
            return _pending(seen, now)
        case Phase.RUNNING:
            return _running(seen, now)
        case Phase.PAUSED_FOR_USER_INPUT | Phase.DELEGATING:
            return _waiting(seen, now)
        case Phase.COMPLETED | Phase.FAILED:
            return _ended(seen, now)
        case _:
            assert_never(seen.status.phase)


def failures_after(fact: ActorFact, failures: int) -> int:
    """Consecutive failed attempts once `fact` is known: a returned run resets them."""
    return failures + 1 if isinstance(fact, FAILURES) else 0 if isinstance(fact, ActorReturned) else failures


def backoff(failures: int) -> float:
    """Seconds before the next attempt: a first failure is retried at once, repeated ones back off."""
    return 0.0 if failures <= 1 else min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (failures - 2))


# --- Cases --------------------------------------------------------------------------------------------------
def _gone(seen: Observed) -> Decision:
    """deleted: the supervisor stops the actor (a run deleted mid-step stops now); the event forgets the run and
    frees its slot; the clock stops."""
    match seen.trigger:
        case Trigger.SUPERVISOR:
            return Decision(seen.status, (do.KillActor(_actor_of(seen.status)), do.Exit()))
        case Trigger.EVENT:
            freed = (do.WakeAdmitted(),) if seen.seen and seen.seen.phase is Phase.RUNNING else ()
            return Decision(seen.status, (do.Remember(0, None), *freed))
        case Trigger.CLOCK:
            return Decision(seen.status, (do.Exit(),))
        case _:
            assert_never(seen.trigger)


def _invalid(seen: Observed) -> Decision:
    """A spec the schema let through but the models refuse: say so, and do nothing else (the clock stops; a
    supervisor looks again later, as the spec may be fixed)."""
    status = _said(seen.status, f"invalid spec: {seen.spec_error}")
    match seen.trigger:
        case Trigger.EVENT:
            return Decision(status)
        case Trigger.SUPERVISOR:
            return Decision(status, (do.Sleep(MAX_BACKOFF_SECONDS),))
        case Trigger.CLOCK:
            return Decision(seen.status, (do.Exit(),))
        case _:
            assert_never(seen.trigger)


def _stopped(seen: Observed, stop: Stop, now: datetime) -> Decision:
    """pending|running|paused|delegating -> failed: Cancelled, Timeout. The epoch is raised in the same write, so
    a live actor is fenced out before it is killed; children that have not ended are cancelled too."""
    status = seen.status
    failed = enter(status.model_copy(update={"error": stop.message, "epoch": status.epoch + 1}),
                   Phase.FAILED, stop.reason, stop.message, now=now)
    children = tuple(do.CancelChild(name) for name, child in sorted(seen.children.items())
                     if child.phase is None or not child.phase.terminal)
    return Decision(failed, (do.PostEvent("Warning", stop.reason, stop.message), do.KillActor(_actor_of(status)),
                             *children), guarded=True)


def _pending(seen: Observed, now: datetime) -> Decision:
    """pending -> pending: waiting for the Task, the Agent or a slot (the message says which; condition Stalled
    and a Warning when it is not just the queue or a moment of start-up: blocking.py);
    pending -> failed: AgentNotFound, a child run whose Agent does not exist;
    pending -> running: Scheduled, once the Agent is ready and the admission plan has a slot."""
    status, target = seen.status, seen.target
    if seen.trigger is not Trigger.EVENT or seen.scheduled or target is None:
        return Decision(status)  # our Running write has not come back through the watch yet
    if seen.parsed.fork_of is not None and (forking := _fork(seen, now)) is not None:
        return forking
    if not target.found:
        return Decision(*blocked(status, Reason.TASK_NOT_FOUND, "waiting for its Task to exist", now))
    if not target.agent_exists and seen.parsed.parent is not None:  # pending -> failed: nothing to wait for
        return Decision(*failed(status, Reason.AGENT_NOT_FOUND, f"Agent {target.agent!r} not found: a delegated run "
                                "does not wait for its Agent to appear", now), guarded=True)
    if not target.ready:
        waiting = f"waiting for Agent {target.agent!r} to be ready: {target.message}"
        if target.settling:  # a moment of start-up (its dependencies are being reconciled), not worth a Warning
            return Decision(_said(status, waiting))
        reason = Reason.AGENT_NOT_READY if target.agent_exists else Reason.AGENT_NOT_FOUND
        return Decision(*blocked(status, reason, waiting, now))
    match seen.slot:
        case InQueue(message=message, position=position):
            if (status.message, status.queue_position) == (message, position):
                return Decision(status)
            return Decision(status.model_copy(update={"message": message, "queue_position": position}))
        case Admitted():
            running = enter(unblocked(status, now), Phase.RUNNING, Reason.SCHEDULED, "starting an actor", now=now)
            actor = ActorRef(name=actor_name(seen.ref.namespace, seen.ref.name, seen.ref.uid),
                             namespace=seen.ray_namespace)
            running = running.model_copy(update={"agent": target.agent, "actor": actor, "queue_position": None,
                                                 "traceparent": status.traceparent or seen.traceparent or None})
            return Decision(running, (do.PostEvent("Normal", Reason.SCHEDULED, f"agent {target.agent!r} is ready"),),
                            holds_slot=True)
        case None:
            return Decision(status)
        case _:
            assert_never(seen.slot)


def _fork(seen: Observed, now: datetime) -> Decision | None:
    """pending -> failed: ForkFailed, the fork's source is gone, replaced or cannot be forked at forkOf.step;
    pending -> pending: Forked, the source pinned by uid (status.forkedFrom, label kubechain.dev/forked-from);
    None: pinned and sound, a fork waits for its Agent and a slot like any run. Its first actor copies the
    source's checkpoint (actors/fork.py)."""
    fork, status, source = seen.parsed.fork_of, seen.status, seen.fork_source
    assert fork is not None
    if problem := source_problem(fork, source, status.forked_from.uid if status.forked_from else None):
        return Decision(*failed(status, Reason.FORK_FAILED, problem, now), guarded=True)
    if status.forked_from is not None or source is None:
        return None
    origin = ForkedFrom(name=fork.name, uid=source.uid, step=fork.step)
    answer = " with forkOf.input as its question's answer" if fork.input is not None else ""
    return Decision(status.model_copy(update={"forked_from": origin}), (
        do.PostEvent("Normal", Reason.FORKED, f"forked from TaskRun {fork.name} (uid {source.uid}) at step "
                                              f"{fork.step}{answer}"),
        do.LabelRun(((LABEL_FORKED_FROM, label_value(fork.name)), (LABEL_AGENT, source.agent)))), guarded=True)


def _running(seen: Observed, now: datetime) -> Decision:
    """running: the supervisor keeps exactly one actor on the run (events and the clock leave it alone; the
    actor owns every edge out of Running). Each fact is one round:
      absent   -> prepare a RunSpec at epoch+1 (with the inputs of calls that waited, for a resumed run)
      prepared -> write the raised epoch (fencing out any older actor), then create the actor
      queued   -> say once why it waits (every start taken, no pooled actor free), wait on in the actor line
      created  -> record the actor (a pooled one is found again by this name), then give it the run
      found    -> join the live actor's run
      returned -> look again soon;  lost -> Event, look again (or CrashLoop);  Ray down -> condition, Event,
      reconnect;  cannot start -> Stalled, look again later; or running -> failed (SecretNotFound) when it never
      could;  wedged -> Event, kill the actor, look again (counted as a loss: a fresh actor one epoch up)."""
    status, fact = seen.status, seen.actor
    match fact:
        case None:
            return Decision(status)
        case ActorAbsent() if (retry := llm_retry_at(status)) and retry > now:
            # running, backing off: the actor let go of the run until the LLM's retry time (status.llmRetry)
            return Decision(status, (do.Sleep((retry - now).total_seconds()),))
        case ActorAbsent() if status.llm_retry is not None and not seen.retry_turn:
            # running, backing off, due: other runs' attempts hold every turn to start an actor; wait for one
            waiting = (f"LLM retry due (attempt {status.llm_retry.attempts + 1}); waiting for a turn to start an "
                       f"actor (KUBECHAIN_MAX_RETRY_STARTS runs attempt at once)")
            return Decision(_said(status, waiting), (do.Sleep(RETRY_TURN_SECONDS),))
        case ActorAbsent():
            inputs = gather(seen, seen.parsed, now).inputs
            return Decision(status, (do.PrepareActor(status.epoch + 1, inputs),))
        case ActorPrepared(spec=spec):
            # guarded: over the resourceVersion the epoch was read at, so two supervisors never both hold N+1
            return Decision(status.model_copy(update={"epoch": spec.epoch}), (do.CreateActor(spec),), guarded=True)
        case ActorQueued(spec=spec, limit=limit):  # said once (the message and an Event), then waited on quietly
            said = _said(status, waiting_message(limit))
            event = () if said is status else (do.PostEvent("Normal", Reason.ACTOR_QUEUED, said.message),)
            return Decision(said, (*event, do.CreateActor(spec)))
        case ActorCreated(ref=ref, spec=spec):
            reason, restored = _start_kind(status, spec.epoch)
            if status.message.startswith(WAITING):  # it waited in the actor line: no longer
                status = _said(status, f"actor {ref.name} (epoch {spec.epoch}): {restored}")
            recorded = ray_available(unblocked(status, now).model_copy(update={"actor": ref}), now, True)
            recovery = (do.CountRecovery(),) if reason is Reason.ACTOR_RESTARTED else ()
            return Decision(recorded, (do.PostEvent("Normal", reason, f"actor {ref.name} (epoch {spec.epoch}): {restored}"),
                                       *recovery, do.JoinActor(spec)))
        case ActorFound():
            return Decision(ray_available(status, now, True), (
                do.PostEvent("Normal", Reason.ACTOR_ATTACHED, f"supervising the running actor (epoch {status.epoch})"),
                do.JoinActor(None)))
        case ActorReturned():
            return Decision(status, (do.Sleep(RETURNED_SECONDS),))
        case ActorLost(message=message):
            return _lost(seen, message, now)
        case ActorWedged(message=message):
            # It lives, so nothing would replace it: kill it (a raised epoch fences it out should it wake first).
            return _lost(seen, message, now, Reason.ACTOR_WEDGED)
        case RayDown(message=message):
            down = ray_available(status, now, False, message[:500])
            flipped = () if down is status else (
                do.PostEvent("Warning", Reason.RAY_UNAVAILABLE, f"{message[:500]}; retrying, the run stays Running"),)
            return Decision(down, (*flipped, do.DisconnectRay(), do.Sleep(backoff(seen.failures))))
        case CannotStart(message=message, final=reason) if reason is not None:  # running -> failed: no actor
            return Decision(*failed(status, reason, message, now), guarded=True)
        case CannotStart(message=message):
            said, event = blocked(status, Reason.CANNOT_START, message, now)
            return Decision(said, (*event, do.Sleep(backoff(seen.failures))))
        case _:
            assert_never(fact)


def _lost(seen: Observed, message: str, now: datetime, reason: Reason = Reason.ACTOR_LOST) -> Decision:
    """running -> running: ActorLost, restored from the checkpoint after a back-off that grows with the losses at
    this step; running -> failed: CrashLoop, at spec.crashLoopLimit losses without a checkpointed step (a step
    that crashes its actor every time would otherwise be re-asked forever: maxTurns never counts it). A wedged
    actor (its loop blocked) counts as a loss too."""
    status, limit = seen.status, seen.parsed.crash_loop_limit
    before = status.crashes if status.crashes and status.crashes.step == status.step else None
    crashes = Crashes(count=(before.count if before else 0) + 1, step=status.step, last_error=message[:1000])
    if crashes.count >= limit:
        text = (f"the actor was lost {crashes.count} times at step {status.step} without checkpointing a step "
                f"(spec.crashLoopLimit {limit}); the last time: {message[:500]}")
        failed = enter(status.model_copy(update={"crashes": crashes, "error": text, "epoch": status.epoch + 1}),
                       Phase.FAILED, Reason.CRASH_LOOP, text, now=now)
        return Decision(failed, (do.PostEvent("Warning", Reason.CRASH_LOOP, text), do.KillActor(_actor_of(status))),
                        guarded=True)
    text = f"{message}; restoring from the checkpoint (loss {crashes.count} of {limit} at step {status.step})"
    # A wedged actor lives, so nothing would replace it: kill it (the raised epoch fences it out should it wake).
    kill = (do.KillActor(_actor_of(status)),) if reason is Reason.ACTOR_WEDGED else ()
    return Decision(status.model_copy(update={"crashes": crashes}),
                    (do.PostEvent("Warning", reason, text), *kill, do.Sleep(crash_backoff(crashes.count))))


def crash_backoff(losses: int) -> float:
    """Seconds before restoring after the `losses`-th loss at one step: the first at once, then 1, 2, 4 ... 30."""
    return 0.0 if losses <= 1 else min(CRASH_BACKOFF_SECONDS, 2.0 ** (losses - 2))


def _waiting(seen: Observed, now: datetime) -> Decision:
    """paused|delegating: create the child runs and tool Jobs of waiting calls (at most maxParallelToolCalls
    Jobs unfinished), then
      paused|delegating -> running: InputReceived / ChildrenFinished / JobsFinished, once every waiting call
        has its answer, decision (an expired approval is a rejection), child result or Job result;
      paused|delegating -> paused|delegating: the message says what is still awaited.
    The clock only notices an approval that expired, and wakes the event handler to decide."""
    status, spec = seen.status, seen.parsed
    if seen.trigger is Trigger.CLOCK:
        expired = [r.id for r in status.tool_call_history
                   if r.state is CallState.WAITING and r.expires_at and now >= parse_rfc3339(r.expires_at)]
        return Decision(status, (do.Wake("", f"approval deadline of {', '.join(expired)}"),) if expired else ())
    if seen.trigger is not Trigger.EVENT:
        return Decision(status)
    starts: tuple[do.Effect, ...] = (*_children_to_create(seen), *_jobs_to_create(seen))
    gathered = gather(seen, spec, now)
    if gathered.missing:
        return Decision(_said(status, "waiting for " + "; ".join(gathered.missing)), starts)
    kinds = {r.waiting_for for r in status.tool_call_history if r.key in gathered.inputs}
    human = any(k.human for k in kinds if k)
    reason = (Reason.CHILDREN_FINISHED if WaitingFor.CHILD_RUN in kinds and not human
              else Reason.JOBS_FINISHED if WaitingFor.JOB in kinds and not human else Reason.INPUT_RECEIVED)
    message = f"resuming with {len(gathered.inputs)} result(s)"
    # No actor holds a waiting run: clearing status.actor tells the next actor's start from a crash recovery.
    running = enter(status, Phase.RUNNING, reason, message, now=now).model_copy(update={"actor": None})
    return Decision(running, (*starts, do.PostEvent("Normal", reason, message)), guarded=True)


def _ended(seen: Observed, now: datetime) -> Decision:
    """completed|failed: a child run wakes its parent (which may resume now); the clock drops the run's sealed
    chunks contextRetentionSeconds after it ended (the status says so first: readers stop looking for them; a
    guarded write, so a clock that sees the run before its own write does not drop twice), and deletes the run
    ttlSecondsAfterFinished after it ended."""
    status = seen.status
    if seen.trigger is Trigger.CLOCK:
        if (drop := context_drop_at(seen.parsed, status)) is not None and now >= drop:
            sealed = status.sealed_context
            dropped = status.model_copy(update={"sealed_context": sealed.model_copy(update={"dropped_at": rfc3339(now)})})
            message = (f"dropped {sealed.messages} messages and {sealed.tool_calls} tool calls sealed in "
                       f"{sealed.chunks} chunks ({sealed.bytes} bytes): contextRetentionSeconds "
                       f"{seen.parsed.context_retention_seconds} passed since the run ended")
            return Decision(dropped, (do.DropContext(sealed.chunks), do.PostEvent("Normal", Reason.CONTEXT_DROPPED,
                                                                                  message)), guarded=True)
        due = deletion_at(seen.parsed, status)
        return Decision(status, (do.DeleteRun(), do.Exit()) if due is not None and now >= due else ())
    if seen.trigger is Trigger.EVENT and seen.parsed.parent is not None:
        return Decision(status, (do.Wake(seen.parsed.parent.name, f"child {seen.ref.name} {status.phase.value}"),))
    return Decision(status)


# --- What every event also keeps up to date -----------------------------------------------------------------
def _books(seen: Observed, decision: Decision, now: datetime) -> Decision:
    """Condition Succeeded (Unknown until the run ends) for `kubectl wait`, condition ResponsesValid, the Task's
    view of its run, transition metrics, a freed admission slot, and tool Jobs no longer needed. A guarded
    decision (resume, stop) writes only its own change: the conditions follow on the event it causes."""
    status, effects, llm = decision.status, list(decision.effects), None
    if not decision.guarded:
        status, refused = responses_valid(status, seen, now)
        status, llm = llm_available(context_store_available(succeeded(status, now), now), now)
        if refused:
            effects.append(do.PostEvent("Warning", Reason.RESPONSE_REFUSED, refused))
        if llm is not None:
            effects.append(llm)
    history = len(seen.status.phase_history)
    if seen.seen is None or seen.seen.history != history:
        if seen.seen is not None and history:
            last = seen.status.phase_history[-1]
            effects.append(do.CountTransition(last.phase.value, last.reason))
        if seen.seen is not None and seen.seen.phase is Phase.RUNNING and seen.status.phase is not Phase.RUNNING:
            effects.append(do.WakeAdmitted())
    effects.append(do.Remember(history, seen.status.phase.value))
    if seen.task and seen.task_shows != seen.status.phase.value:
        effects.append(do.ShowOnTask(seen.task, seen.status.phase.value, seen.status.output, seen.status.error))
    effects.extend(do.DeleteJob(r.job) for r in seen.status.tool_call_history
                   if r.job and r.key in seen.jobs and (r.state.finished or seen.status.phase.terminal))
    # LLMAvailable's flip is written over the version it was decided on: from a stale event (the actor's next
    # attempt saved before the flip came back) it would flip, and post its once-per-episode Event, again
    return replace(decision, status=status, effects=tuple(effects), guarded=decision.guarded or llm is not None)


def _next_tick(seen: Observed, decision: Decision, now: datetime) -> Decision:
    """The clock sleeps until the next deadline (at most CLOCK_SECONDS: it looks at the live run again), and
    stops for an ended run that has none."""
    if any(isinstance(e, do.Exit) for e in decision.effects):
        return decision
    due = next_deadline(seen.parsed, seen.status, seen.created)
    if due is None and seen.status.phase.terminal:
        return replace(decision, effects=(*decision.effects, do.Exit()))
    longest = ENDED_CLOCK_SECONDS if seen.status.phase.terminal else CLOCK_SECONDS
    pause = longest if due is None else min(longest, max(0.05, (due - now).total_seconds()))
    if any(isinstance(e, do.Wake) for e in decision.effects):
        pause = CLOCK_SECONDS  # the event handler decides now; waking it again at once would change nothing
    return replace(decision, effects=(*decision.effects, do.Sleep(pause)))


# --- Pieces -------------------------------------------------------------------------------------------------
def gather(seen: Observed, spec: TaskRunSpec, now: datetime) -> Gathered:
    """What the run's waiting calls have received (an approval past its deadline: a rejection)."""
    jobs = dict(seen.jobs)
    for key, container in seen.containers.items():
        if container is None and key not in jobs:
            record = next(r for r in seen.status.tool_call_history if r.key == key)
            jobs[key] = JobOutcome(True, False, f"tool {record.tool!r} is no longer a container tool of agent "
                                                f"{seen.status.agent!r}; the call did not run")
    refused = refused_delegations(seen)
    return gather_inputs(seen.status, spec.responses, dict(seen.children), now, jobs, refused)


def _children_to_create(seen: Observed) -> list[do.CreateChild]:
    status, refused = seen.status, refused_delegations(seen)
    delegated = [r for r in status.tool_call_history if r.state is CallState.WAITING
                 and r.waiting_for is WaitingFor.CHILD_RUN and r.key not in refused]
    budget = child_budget(seen.parsed, status.tree_usage, status.tree_cost, max(len(delegated), 1))
    return [do.CreateChild(child_taskrun(seen.ref.namespace, seen.ref.name, seen.ref.uid, seen.parsed, status.agent,
                                         r, json.loads(r.arguments)["message"], status.traceparent, budget),
                           f"call {r.id}: child TaskRun {r.child_run} (agent {r.delegated_to})")
            for r in delegated if r.child_run not in seen.children]


def _jobs_to_create(seen: Observed) -> list[do.CreateJob]:
    """Jobs of waiting container calls, keeping at most maxParallelToolCalls unfinished."""
    waiting = [r for r in seen.status.tool_call_history if r.state is CallState.WAITING and r.waiting_for is WaitingFor.JOB]
    room = seen.parsed.max_parallel_tool_calls - sum(1 for r in waiting if r.key in seen.jobs and not seen.jobs[r.key].finished)
    creates = []
    for record in (r for r in waiting if r.key not in seen.jobs):
        if room <= 0:
            break
        container = seen.containers.get(record.key)
        if container is not None:
            creates.append(do.CreateJob(tool_job(seen.ref.namespace, seen.ref.name, seen.ref.uid, record, container),
                                        f"call {record.id} ({record.tool}): Job {record.job}"))
        room -= 1
    return creates


def _start_kind(status: TaskRunStatus, epoch: int) -> tuple[Reason, str]:
    """Why a new actor starts: the run's first, a resumption (no actor holds the run since it resumed from a wait
    or its actor let go of it for an LLM back-off), or a recovery from a lost actor."""
    if epoch == 1:
        return Reason.ACTOR_STARTED, "new run"
    if status.actor is None:
        return Reason.ACTOR_RESUMED, f"resumed at step {status.step}"
    return Reason.ACTOR_RESTARTED, f"restored from the checkpoint at step {status.step}"


def _actor_of(status: TaskRunStatus) -> str | None:
    return status.actor.name if status.actor else None


def _said(status: TaskRunStatus, message: str) -> TaskRunStatus:
    return status if status.message == message else status.model_copy(update={"message": message})
