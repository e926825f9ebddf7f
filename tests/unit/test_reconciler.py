"""The TaskRun reconciler, one row per edge of its diagram (kubechain/core/reconciler.py), named by the edge."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from kubechain.api.runspec import CallInput, RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import (ActorRef, CallState, Condition, Crashes, HumanResponse, LLMRetry, LLMSpec, Phase, TaskRunSpec,
                                    SealedContext, TaskRunStatus, ToolCallRecord, WaitingFor)
from kubechain.api.v1alpha1.common import rfc3339
from kubechain.api.v1alpha1.tool import ContainerExecution
from kubechain.core import effects as do
from kubechain.core.lifecycle import ChildOutcome, JobOutcome, enter
from kubechain.core.observation import (ActorAbsent, ActorCreated, ActorFound, ActorLost, ActorPrepared, ActorQueued,
                                        ActorReturned,
                                        ActorWedged, Admitted, CannotStart, InQueue, Observed, RayDown, Seen, Target, Trigger)
from kubechain.core.reconciler import backoff, failures_after, reconcile

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(seconds=5)
REF = TaskRunRef(namespace="ns", name="run", uid="uid-1234567890")
SPEC = TaskRunSpec.model_validate({"taskRef": {"name": "task"}})
READY = Target(True, "helper", True, "ok")


def running(**update) -> TaskRunStatus:
    status = enter(TaskRunStatus(), Phase.RUNNING, "Scheduled", "starting an actor", now=T0)
    return status.model_copy(update={"agent": "helper", "epoch": 1, "actor": ActorRef(name="a1", namespace="kc"),
                                     **update})


def waiting(phase: Phase, *records: ToolCallRecord, **update) -> TaskRunStatus:
    reason = "WaitingForInput" if phase is Phase.PAUSED_FOR_USER_INPUT else "Delegated"
    return enter(running(**update), phase, reason, "waiting", now=T0).model_copy(
        update={"tool_call_history": list(records)})


def ended(phase: Phase, **update) -> TaskRunStatus:
    return enter(running(), phase, "FinalAnswer" if phase is Phase.COMPLETED else "LLMError", "done", now=T0) \
        .model_copy(update=update)


def call(id_: str, waiting_for: WaitingFor, **fields) -> ToolCallRecord:
    return ToolCallRecord(id=id_, step=1, tool=fields.pop("tool", "t"), arguments=fields.pop("arguments", "{}"),
                          state=fields.pop("state", CallState.WAITING), waiting_for=waiting_for, **fields)


ASK = call("c1", WaitingFor.ANSWER, question="which region?")
CHILD = call("c2", WaitingFor.CHILD_RUN, arguments='{"message": "find x"}', child_run="run-child", delegated_to="fact")
JOB = call("c3", WaitingFor.JOB, tool="shout", job="run-tool-1")
CONTAINER = ContainerExecution(image="busybox")


def run_spec(epoch: int) -> RunSpec:
    return RunSpec(taskrun=REF, epoch=epoch, agent="helper", llm=LLMSpec(model="m"), system_prompt="s", user_input="u")


def seen(status: TaskRunStatus, trigger: Trigger = Trigger.EVENT, spec: TaskRunSpec = SPEC, **fields) -> Observed:
    return Observed(trigger, REF, status, spec, ray_namespace="kc", **fields)


def kinds(decision) -> list[type]:
    return [type(e) for e in decision.effects if not isinstance(e, (do.Remember, do.Sleep))]


def events(decision) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in decision.effects if isinstance(e, do.PostEvent)]


def last(decision) -> tuple[Phase, str]:
    return decision.status.phase, decision.status.phase_history[-1].reason if decision.status.phase_history else ""


def cond(decision, type_: str) -> Condition | None:
    return next((c for c in decision.status.conditions if c.type == type_), None)


# --- pending ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, slot, message, stalled", [
    pytest.param(Target(False), None, "waiting for its Task to exist", "TaskNotFound", id="pending->pending: no Task"),
    pytest.param(Target(True, "helper", False, "LLM 'x' not found"), None,
                 "waiting for Agent 'helper' to be ready: LLM 'x' not found", "AgentNotReady",
                 id="pending->pending: Agent not ready"),
    pytest.param(Target(True, "helper", False, "not found", agent_exists=False), None,
                 "waiting for Agent 'helper' to be ready: not found", "AgentNotFound",
                 id="pending->pending: no Agent (a run of a Task: it may be created)"),
    pytest.param(READY, InQueue("Queued: position 2 of 3 (cluster limit: 1 of 1 running)", 2),
                 "Queued: position 2 of 3 (cluster limit: 1 of 1 running)", None, id="pending->pending: queued"),
    pytest.param(Target(True, "helper", False, "LLM 'x' is not reconciled yet", settling=True), None,
                 "waiting for Agent 'helper' to be ready: LLM 'x' is not reconciled yet", None,
                 id="pending->pending: Agent being reconciled (start-up: quietly)"),
])
def test_pending_waits_and_says_why(target, slot, message, stalled):
    decision = reconcile(seen(TaskRunStatus(), target=target, slot=slot), NOW)
    assert decision.status.phase is Phase.PENDING and decision.status.message == message
    assert not decision.guarded and decision.status.queue_position == (slot.position if slot else None)
    # A run that cannot progress says so: condition Stalled and one Warning (a queued run is only waiting its turn).
    assert events(decision) == ([("Warning", stalled)] if stalled else [])
    assert (cond(decision, "Stalled").reason if stalled else cond(decision, "Stalled")) == stalled
    again = reconcile(seen(decision.status, target=target, slot=slot), NOW)
    assert again.status is decision.status and events(again) == []  # said once, not per retry
    if stalled:
        started = reconcile(seen(decision.status, target=READY, slot=Admitted()), NOW)
        assert cond(started, "Stalled").status == "False" and cond(started, "Stalled").reason == "Progressing"


def test_a_child_run_whose_agent_does_not_exist_fails_at_once():
    child = TaskRunSpec.model_validate({"agentRef": {"name": "ghost"}, "userInput": "hi",
                                        "parent": {"name": "boss-run", "uid": "p", "toolCallId": "c1"}})
    decision = reconcile(seen(TaskRunStatus(), spec=child,
                              target=Target(True, "ghost", False, "not found", agent_exists=False)), NOW)
    assert last(decision) == (Phase.FAILED, "AgentNotFound") and decision.guarded
    assert decision.status.error == "Agent 'ghost' not found: a delegated run does not wait for its Agent to appear"
    assert events(decision) == [("Warning", "AgentNotFound")]


def test_a_pending_run_times_out_from_its_creation():
    timed = SPEC.model_copy(update={"timeout_seconds": 5})
    blocked = reconcile(seen(TaskRunStatus(), target=Target(False), created=T0), NOW - timedelta(seconds=1)).status
    assert reconcile(seen(blocked, Trigger.CLOCK, timed, created=T0), NOW - timedelta(seconds=1)).effects == (
        do.Sleep(1.0),)  # the clock sleeps until the deadline
    decision = reconcile(seen(blocked, Trigger.CLOCK, timed, created=T0), NOW)
    assert last(decision) == (Phase.FAILED, "Timeout") and decision.status.error == (
        "timed out: still not started 5 s after it was created (waiting for its Task to exist)")


def test_pending_to_running_scheduled():
    decision = reconcile(seen(TaskRunStatus(queue_position=3), target=READY, slot=Admitted(),
                              traceparent="00-abc-def-01"), NOW)
    status = decision.status
    assert last(decision) == (Phase.RUNNING, "Scheduled") and decision.holds_slot
    assert (status.agent, status.actor.name, status.actor.namespace) == ("helper", "ns/run/uid-1234", "kc")
    assert status.queue_position is None and status.traceparent == "00-abc-def-01"
    assert events(decision) == [("Normal", "Scheduled")]
    assert cond(decision, "Succeeded").status == "Unknown"  # written with the transition, for `kubectl wait`


@pytest.mark.parametrize("observed", [
    pytest.param(seen(TaskRunStatus(), target=READY, scheduled=True), id="pending: Running written, not back yet"),
    pytest.param(seen(TaskRunStatus(), Trigger.CLOCK), id="pending: the clock has nothing to do"),
])
def test_pending_unchanged(observed):
    decision = reconcile(observed, NOW)
    assert decision.status is observed.status and kinds(decision) == []


def test_invalid_spec_is_said_and_nothing_else():
    decision = reconcile(replace(seen(TaskRunStatus()), spec=None, spec_error="maxTurns: too small"), NOW)
    assert decision.status.message == "invalid spec: maxTurns: too small" and decision.effects == ()


# --- stops --------------------------------------------------------------------------------------------------
CANCEL = SPEC.model_copy(update={"cancel": True})


@pytest.mark.parametrize("status, trigger, spec, at, reason", [
    pytest.param(TaskRunStatus(), Trigger.EVENT, CANCEL, NOW, "Cancelled", id="pending->failed: cancelled"),
    pytest.param(running(), Trigger.EVENT, CANCEL, NOW, "Cancelled", id="running->failed: cancelled"),
    pytest.param(running(), Trigger.CLOCK, SPEC.model_copy(update={"timeout_seconds": 5}), NOW, "Timeout",
                 id="running->failed: timeout"),
    pytest.param(waiting(Phase.DELEGATING, CHILD), Trigger.EVENT, CANCEL, NOW, "Cancelled",
                 id="delegating->failed: cancelled"),
    pytest.param(waiting(Phase.PAUSED_FOR_USER_INPUT, ASK), Trigger.CLOCK,
                 SPEC.model_copy(update={"timeout_seconds": 5}), NOW, "Timeout", id="paused->failed: timeout"),
])
def test_stops(status, trigger, spec, at, reason):
    children = {"run-child": ChildOutcome(Phase.RUNNING), "done-child": ChildOutcome(Phase.COMPLETED)}
    decision = reconcile(seen(status, trigger, spec, children=children), at)
    assert last(decision) == (Phase.FAILED, reason) and decision.guarded
    assert decision.status.epoch == status.epoch + 1 and decision.status.error == decision.status.message
    assert events(decision) == [("Warning", reason)]
    effects = [e for e in decision.effects if isinstance(e, (do.KillActor, do.CancelChild))]
    assert effects == [do.KillActor(status.actor.name if status.actor else None), do.CancelChild("run-child")]


def test_the_clock_ignores_cancel_and_the_supervisor_ignores_stops():
    assert reconcile(seen(running(), Trigger.CLOCK, CANCEL), NOW).status.phase is Phase.RUNNING
    timed = SPEC.model_copy(update={"timeout_seconds": 1})
    supervised = reconcile(seen(running(), Trigger.SUPERVISOR, timed, actor=ActorReturned()), NOW)
    assert supervised.status.phase is Phase.RUNNING


# --- running: the supervisor ---------------------------------------------------------------------------------
def supervise(status: TaskRunStatus, fact, failures: int = 1, **fields):
    return reconcile(seen(status, Trigger.SUPERVISOR, actor=fact, failures=failures, **fields), NOW)


def test_running_absent_prepares_a_spec_one_epoch_up_with_the_waited_for_inputs():
    status = running(epoch=3, tool_call_history=[ASK])
    decision = supervise(status, ActorAbsent(), spec=SPEC.model_copy(update={"responses": {
        "c1": HumanResponse(answer="eu")}}))
    [prepare] = decision.effects
    assert prepare.epoch == 4 and prepare.inputs["c1"] == CallInput(accepted=True, text="eu",
                                                                     response=HumanResponse(answer="eu"))
    assert decision.status is status


def test_running_prepared_raises_the_epoch_then_creates():
    spec = run_spec(4)
    decision = supervise(running(epoch=3), ActorPrepared(spec))
    assert decision.status.epoch == 4 and decision.effects == (do.CreateActor(spec),)
    assert decision.guarded  # over the version it was read at: two supervisors never both reach epoch 4


def test_running_queued_for_an_actor_says_why_once_then_waits_on_in_its_place():
    """running -> running: every actor start is taken (KUBECHAIN_MAX_ACTOR_STARTS) and no pooled actor is free."""
    spec, status = run_spec(2), running(epoch=2, actor=None)
    queued = supervise(status, ActorQueued(spec, limit=2))
    assert queued.effects == (do.PostEvent("Normal", "ActorQueued", queued.status.message), do.CreateActor(spec))
    assert not queued.guarded  # the same spec: its epoch is written
    assert queued.status.message.startswith("waiting for an actor: 2 actor process(es) are starting (at most "
                                            "KUBECHAIN_MAX_ACTOR_STARTS at once) and no ended run's actor is free")
    again = supervise(queued.status, ActorQueued(spec, limit=2))
    assert again.status is queued.status and again.effects == (do.CreateActor(spec),)  # said once: no write, no Event
    ref = ActorRef(name="kubechain-standby-1", namespace="kc", id="ff")
    created = supervise(queued.status, ActorCreated(ref, spec))
    assert created.status.message == "actor kubechain-standby-1 (epoch 2): resumed at step 0"  # no longer waits
    assert supervise(status, ActorCreated(ref, spec)).status.message == status.message  # never waited: untouched


def test_running_backing_off_and_due_waits_for_a_turn_to_start_an_actor():
    retry = LLMRetry(attempts=3, since=T0.isoformat(), retry_at=T0.isoformat(), reason="ServerError", last_error="503")
    status = running(actor=None, llm_retry=retry)
    waits = supervise(status, ActorAbsent(), retry_turn=False)  # other runs' attempts hold every turn
    assert waits.effects == (do.Sleep(0.5),) and waits.status.message.startswith(
        "LLM retry due (attempt 4); waiting for a turn to start an actor (KUBECHAIN_MAX_RETRY_STARTS")
    assert supervise(waits.status, ActorAbsent(), retry_turn=False).status is waits.status  # said once
    [prepare] = supervise(status, ActorAbsent(), retry_turn=True).effects
    assert isinstance(prepare, do.PrepareActor) and prepare.epoch == 2


def test_running_lost_again_at_one_step_backs_off_then_fails_crash_loop():
    status, sleeps = running(step=3), []
    for loss in range(1, 5):
        decision = supervise(status, ActorLost("ActorDiedError: the actor died"))
        assert decision.status.phase is Phase.RUNNING and decision.status.crashes.count == loss
        assert events(decision) == [("Warning", "ActorLost")] and f"loss {loss} of 5 at step 3" in \
            decision.effects[0].message
        sleeps.append(decision.effects[-1].seconds)
        status = decision.status
    assert sleeps == [0.0, 1.0, 2.0, 4.0]
    failed = supervise(status, ActorLost("ActorDiedError: the actor died"))
    assert last(failed) == (Phase.FAILED, "CrashLoop") and failed.guarded and failed.status.epoch == 2
    assert failed.status.error.startswith("the actor was lost 5 times at step 3 without checkpointing a step "
                                          "(spec.crashLoopLimit 5); the last time: ActorDiedError")
    assert events(failed) == [("Warning", "CrashLoop")] and do.KillActor("a1") in failed.effects
    progressed = supervise(status.model_copy(update={"step": 4}), ActorLost("killed"))  # a step was checkpointed
    assert progressed.status.crashes.count == 1 and progressed.status.phase is Phase.RUNNING
    one = supervise(running(), ActorLost("x"), spec=SPEC.model_copy(update={"crash_loop_limit": 1}))
    assert last(one) == (Phase.FAILED, "CrashLoop")


@pytest.mark.parametrize("status, epoch, reason, recovery", [
    pytest.param(running(epoch=0, actor=None), 1, "ActorStarted", False, id="running: first actor started"),
    pytest.param(running(epoch=1, actor=None), 2, "ActorResumed", False, id="running: actor after a resume"),
    pytest.param(running(epoch=1), 2, "ActorRestarted", True, id="running: actor after a crash (recovery)"),
])
def test_running_created_records_the_actor_then_joins(status, epoch, reason, recovery):
    ref = ActorRef(name="kubechain-standby-1", namespace="kc", id="ff")
    decision = supervise(status, ActorCreated(ref, run_spec(epoch)))
    assert decision.status.actor == ref and cond(decision, "RayAvailable").status == "True"
    assert events(decision) == [("Normal", reason)]
    assert (do.CountRecovery() in decision.effects) is recovery
    assert isinstance(decision.effects[-1], do.JoinActor) and decision.effects[-1].spec.epoch == epoch


def test_running_found_attaches():
    decision = supervise(running(), ActorFound("a1"))
    assert events(decision) == [("Normal", "ActorAttached")] and decision.effects[-1] == do.JoinActor(None)


@pytest.mark.parametrize("fact, failures, sleep, event", [
    pytest.param(ActorReturned(), 0, 0.2, None, id="running->running: actor returned, look again"),
    pytest.param(ActorLost("killed"), 1, 0.0, ("Warning", "ActorLost"), id="running->running: actor lost"),
    pytest.param(CannotStart("Agent 'a' is not ready"), 2, 0.5, ("Warning", "CannotStart"),
                 id="running->running: cannot start"),
])
def test_running_looks_again(fact, failures, sleep, event):
    decision = supervise(running(), fact, failures)
    assert decision.effects[-1] == do.Sleep(sleep) and events(decision) == ([event] if event else [])
    if isinstance(fact, CannotStart):
        assert decision.status.message == fact.message and cond(decision, "Stalled").reason == "CannotStart"
        assert events(supervise(decision.status, fact, failures + 1)) == []  # said once
        created = supervise(decision.status, ActorCreated(ActorRef(name="a2", namespace="kc"), run_spec(2)))
        assert cond(created, "Stalled").status == "False"


def test_a_secret_that_does_not_exist_fails_the_run_and_frees_its_slot():
    fact = CannotStart("Secret 'k' not found (header 'Authorization' of tool 'fetch')", final="SecretNotFound")
    decision = supervise(running(), fact)
    assert last(decision) == (Phase.FAILED, "SecretNotFound") and decision.guarded
    assert decision.status.error == fact.message and events(decision) == [("Warning", "SecretNotFound")]
    assert not any(isinstance(e, (do.PrepareActor, do.CreateActor, do.Sleep)) for e in decision.effects)
    freed = reconcile(seen(decision.status, seen=Seen(1, Phase.RUNNING)), NOW)
    assert do.WakeAdmitted() in freed.effects  # the slot it held goes to a queued run


@pytest.mark.parametrize("before, sleep", [
    pytest.param(0, 0.0, id="running->running: actor wedged, killed"),
    pytest.param(2, 2.0, id="running->running: wedged again at the step, backoff"),
])
def test_running_wedged_kills_the_actor_then_looks_again_counted_as_a_loss(before, sleep):
    # the next round finds no actor: ActorAbsent prepares a fresh one at epoch+1, as after a lost actor
    crashes = Crashes(count=before, step=0, last_error="x") if before else None
    decision = supervise(running(crashes=crashes), ActorWedged("no answer to a liveness ping for 31 s"), 1)
    assert decision.status.phase is Phase.RUNNING and decision.status.epoch == 1
    assert events(decision) == [("Warning", "ActorWedged")] and decision.status.crashes.count == before + 1
    assert decision.effects[-2:] == (do.KillActor("a1"), do.Sleep(sleep))
    assert f"no answer to a liveness ping for 31 s; restoring from the checkpoint (loss {before + 1} of 5" in \
        decision.effects[0].message
    assert failures_after(ActorWedged("x"), 1) == 2


def test_running_ray_down_says_so_once_and_reconnects():
    decision = supervise(running(), RayDown("connection refused"), 3)
    assert cond(decision, "RayAvailable").status == "False" and decision.status.phase is Phase.RUNNING
    assert events(decision) == [("Warning", "RayUnavailable")]
    assert decision.effects[-2:] == (do.DisconnectRay(), do.Sleep(1.0))
    again = supervise(decision.status, RayDown("connection refused"), 4)
    assert again.status is decision.status and events(again) == []


@pytest.mark.parametrize("status", [
    pytest.param(waiting(Phase.PAUSED_FOR_USER_INPUT, ASK), id="running->paused: supervisor waits to be stopped"),
    pytest.param(ended(Phase.COMPLETED), id="running->completed: supervisor waits to be stopped"),
])
def test_supervisor_waits_for_kopf_to_stop_it_once_the_run_left_running(status):
    # kopf never starts again a daemon that returned on its own: a resumed run would have no supervisor
    assert supervise(status, ActorReturned()).effects == (do.Sleep(5.0),)


def test_deleted_mid_run_kills_the_actor():
    decision = reconcile(replace(seen(running(), Trigger.SUPERVISOR), exists=False), NOW)
    assert decision.effects == (do.KillActor("a1"), do.Exit())


def test_an_event_of_a_running_run_is_the_supervisors():
    status = running()
    decision = reconcile(seen(status, seen=Seen(1, Phase.RUNNING)), NOW)
    assert decision.status.phase is Phase.RUNNING and kinds(decision) == []


def test_failures_and_backoff():
    assert failures_after(ActorLost("x"), 2) == 3 and failures_after(ActorReturned(), 5) == 0
    assert failures_after(ActorFound("a"), 2) == 2
    assert [backoff(n) for n in range(1, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 5.0]


# --- waiting -------------------------------------------------------------------------------------------------
def answer(call_id: str, **reply) -> TaskRunSpec:
    return SPEC.model_copy(update={"responses": {call_id: HumanResponse(**reply)}})


@pytest.mark.parametrize("status, spec, extra, reason", [
    pytest.param(waiting(Phase.PAUSED_FOR_USER_INPUT, ASK), answer("c1", answer="eu"), {}, "InputReceived",
                 id="paused->running: input received"),
    pytest.param(waiting(Phase.DELEGATING, CHILD), SPEC,
                 {"children": {"run-child": ChildOutcome(Phase.COMPLETED, "x=1")}}, "ChildrenFinished",
                 id="delegating->running: children finished"),
    pytest.param(waiting(Phase.DELEGATING, JOB), SPEC, {"jobs": {"c3": JobOutcome(True, True, "OK")}}, "JobsFinished",
                 id="delegating->running: jobs finished"),
    pytest.param(waiting(Phase.DELEGATING, JOB), SPEC, {"containers": {"c3": None}}, "JobsFinished",
                 id="delegating->running: the tool is no longer a container tool"),
])
def test_waiting_resumes(status, spec, extra, reason):
    decision = reconcile(seen(status, spec=spec, **extra), NOW)
    assert last(decision) == (Phase.RUNNING, reason) and decision.guarded
    assert decision.status.actor is None  # no actor holds a waiting run: the next start is a resumption
    assert events(decision) == [("Normal", reason)]


def test_paused_waits_for_an_answer():
    decision = reconcile(seen(waiting(Phase.PAUSED_FOR_USER_INPUT, ASK)), NOW)
    assert decision.status.phase is Phase.PAUSED_FOR_USER_INPUT and not decision.guarded
    assert decision.status.message == "waiting for an answer to call c1 (t)"


def test_delegating_creates_children_and_jobs_within_the_limit():
    jobs = [call(f"j{i}", WaitingFor.JOB, tool="shout", job=f"run-tool-{i}") for i in range(3)]
    status = waiting(Phase.DELEGATING, CHILD, *jobs)
    spec = SPEC.model_copy(update={"max_parallel_tool_calls": 2})
    decision = reconcile(seen(status, spec=spec, jobs={"j0": JobOutcome(False)},
                              containers={"j1": CONTAINER, "j2": CONTAINER}), NOW)
    children = [e for e in decision.effects if isinstance(e, do.CreateChild)]
    created = [e.body["metadata"]["name"] for e in decision.effects if isinstance(e, do.CreateJob)]
    assert [c.body["metadata"]["name"] for c in children] == ["run-child"] and created == ["run-tool-1"]
    assert children[0].body["spec"]["userInput"] == "find x"
    assert decision.status.phase is Phase.DELEGATING and "waiting for child TaskRun run-child" in decision.status.message


def test_a_delegation_to_an_agent_that_does_not_exist_fails_the_call_and_creates_no_child():
    status = waiting(Phase.DELEGATING, CHILD)
    decision = reconcile(seen(status, absent_agents=frozenset({"fact"})), NOW)
    assert not [e for e in decision.effects if isinstance(e, do.CreateChild)]
    assert last(decision) == (Phase.RUNNING, "ChildrenFinished")
    prepare = supervise(decision.status, ActorAbsent(), absent_agents=frozenset({"fact"})).effects[0]
    assert prepare.inputs["c2"] == CallInput(accepted=False, text="delegation refused: Agent 'fact' does not exist "
                                                                  "in namespace 'ns'; no child run was created")
    # A child that exists already is waited for: it fails on its own if its Agent is gone.
    assert reconcile(seen(status, absent_agents=frozenset({"fact"}), children={"run-child": ChildOutcome(
        Phase.PENDING)}), NOW).status.phase is Phase.DELEGATING


def test_the_clock_wakes_a_run_whose_approval_expired():
    approval = call("c9", WaitingFor.APPROVAL, expires_at="2026-12-01T12:00:03.000Z")
    status = waiting(Phase.PAUSED_FOR_USER_INPUT, approval)
    early = reconcile(seen(status, Trigger.CLOCK), T0 + timedelta(seconds=1))
    assert kinds(early) == [] and early.effects[-1] == do.Sleep(2.0)
    late = reconcile(seen(status, Trigger.CLOCK), NOW)
    assert late.effects == (do.Wake("", "approval deadline of c9"), do.Sleep(5.0))
    resumed = reconcile(seen(status), NOW)  # the event it causes resumes the run with a rejection
    assert last(resumed) == (Phase.RUNNING, "InputReceived")


# --- ended --------------------------------------------------------------------------------------------------
def test_a_child_that_ended_wakes_its_parent():
    spec = TaskRunSpec.model_validate({"agentRef": {"name": "fact"}, "userInput": "x",
                                       "parent": {"name": "boss-run", "uid": "p", "toolCallId": "c2"}})
    decision = reconcile(seen(ended(Phase.COMPLETED), spec=spec), NOW)
    assert do.Wake("boss-run", "child run Completed") in decision.effects


@pytest.mark.parametrize("ttl, at, effects", [
    pytest.param(None, NOW, (do.Exit(),), id="completed: no TTL, the clock stops"),
    pytest.param(30, NOW, (do.Sleep(25.0),), id="completed: TTL not due (the clock sleeps until it is)"),
    pytest.param(3600, NOW, (do.Sleep(300.0),), id="completed: TTL far off (the clock looks every 5 min)"),
    pytest.param(0, NOW, (do.Exit(),), id="completed: TTL 0 keeps the run, the clock stops"),
    pytest.param(3, NOW, (do.DeleteRun(), do.Exit()), id="completed->deleted: TTL passed"),
])
def test_ttl(ttl, at, effects):
    spec = SPEC.model_copy(update={"ttl_seconds_after_finished": ttl})
    assert reconcile(seen(ended(Phase.COMPLETED), Trigger.CLOCK, spec), at).effects == effects


SEALED = SealedContext(chunks=3, messages=40, tool_calls=20, bytes=90_000, sha256="abc")


@pytest.mark.parametrize("keep, sealed, ttl, effects", [
    pytest.param(None, SEALED, None, (do.Exit(),), id="completed: no retention, the clock stops"),
    pytest.param(30, SEALED, None, (do.Sleep(25.0),), id="completed: retention not due"),
    pytest.param(3, SealedContext(), None, (do.Exit(),), id="completed: retention passed, nothing sealed"),
    pytest.param(3, SEALED.model_copy(update={"dropped_at": "2026-01-01T00:00:00Z"}), 60, (do.Sleep(55.0),),
                 id="completed: chunks dropped already, the TTL next"),
])
def test_context_retention_waits(keep, sealed, ttl, effects):
    spec = SPEC.model_copy(update={"context_retention_seconds": keep, "ttl_seconds_after_finished": ttl})
    decision = reconcile(seen(ended(Phase.COMPLETED, sealed_context=sealed), Trigger.CLOCK, spec), NOW)
    assert decision.effects == effects and decision.status.sealed_context == sealed


def test_context_retention_drops_the_chunks_once_the_status_says_so():
    spec = SPEC.model_copy(update={"context_retention_seconds": 3, "ttl_seconds_after_finished": 60})
    decision = reconcile(seen(ended(Phase.COMPLETED, sealed_context=SEALED), Trigger.CLOCK, spec), NOW)
    assert decision.guarded  # a clock round that sees the run before this write loses the race: never twice
    assert decision.status.sealed_context == SEALED.model_copy(update={"dropped_at": rfc3339(NOW)})
    drop, event, sleep = decision.effects
    assert drop == do.DropContext(3) and isinstance(sleep, do.Sleep)
    assert event.reason == "ContextDropped" and "40 messages and 20 tool calls" in event.message \
        and "contextRetentionSeconds 3" in event.message


# --- the books every event keeps -------------------------------------------------------------------------------
def test_books_of_an_event_that_shows_a_run_has_ended():
    record = call("c3", WaitingFor.JOB, state=CallState.SUCCEEDED, job="run-tool-1")
    status = ended(Phase.COMPLETED, output="42", tool_call_history=[record])
    decision = reconcile(seen(status, task="task", task_shows="Running", seen=Seen(1, Phase.RUNNING),
                              jobs={"c3": JobOutcome(True, True, "ok")}), NOW)
    succeeded = cond(decision, "Succeeded")
    assert (succeeded.status, succeeded.reason) == ("True", "FinalAnswer")
    assert do.CountTransition("Completed", "FinalAnswer") in decision.effects
    assert do.WakeAdmitted() in decision.effects  # it left Running: its slot is free
    assert do.ShowOnTask("task", "Completed", "42", None) in decision.effects
    assert do.DeleteJob("run-tool-1") in decision.effects and do.Remember(2, "Completed") in decision.effects
    quiet = reconcile(seen(decision.status, task="task", task_shows="Completed", seen=Seen(2, Phase.COMPLETED)), NOW)
    assert quiet.status is decision.status and kinds(quiet) == []  # nothing new: nothing written


def test_refused_replies_are_a_condition_and_a_warning_once():
    status = waiting(Phase.PAUSED_FOR_USER_INPUT, ASK)
    decision = reconcile(seen(status, spec=answer("c1", approved=True)), NOW)
    refused = cond(decision, "ResponsesValid")
    assert (refused.status, refused.reason) == ("False", "Refused") and "waits for an `answer`" in refused.message
    assert events(decision) == [("Warning", "ResponseRefused")]
    again = reconcile(seen(decision.status, spec=answer("c1", approved=True)), NOW)
    assert events(again) == [] and cond(again, "ResponsesValid") == refused


def test_a_deleted_run_is_forgotten_and_frees_its_slot():
    decision = reconcile(replace(seen(running(), seen=Seen(1, Phase.RUNNING)), exists=False, spec=None), NOW)
    assert decision.effects == (do.Remember(0, None), do.WakeAdmitted())


# --- the LLM's outages (status.llmRetry, written by the actor) -------------------------------------------------
BACKING_OFF = LLMRetry(attempts=2, since="2026-12-01T12:00:00.000Z", retry_at="2026-12-01T12:00:35.000Z",
                       reason="RateLimited", last_error="RateLimitError: slow down")


def test_running_backing_off_holds_no_actor_until_the_retry_time():
    status = running(llm_retry=BACKING_OFF)
    assert supervise(status, ActorAbsent()).effects == (do.Sleep(30.0),)
    due = reconcile(seen(status, Trigger.SUPERVISOR, actor=ActorAbsent()), NOW + timedelta(seconds=31))
    assert [type(e) for e in due.effects] == [do.PrepareActor]


def test_an_actor_after_a_backoff_is_a_resumption_not_a_recovery():
    released = running(llm_retry=BACKING_OFF, actor=None)  # the actor let go of the run (status.actor: null)
    decision = supervise(released, ActorCreated(ActorRef(name="a2", namespace="kc"), run_spec(2)))
    assert events(decision) == [("Normal", "ActorResumed")] and do.CountRecovery() not in decision.effects
    crashed = running(llm_retry=BACKING_OFF)  # killed while it slept through a short back-off: a recovery
    assert events(supervise(crashed, ActorCreated(ActorRef(name="a3", namespace="kc"), run_spec(3)))) == [
        ("Normal", "ActorRestarted")]


def test_llm_available_flips_once_per_episode():
    down = reconcile(seen(running(llm_retry=BACKING_OFF)), NOW)
    assert (cond(down, "LLMAvailable").status, cond(down, "LLMAvailable").reason) == ("False", "RateLimited")
    assert events(down) == [("Warning", "RateLimited")] and down.guarded  # a stale event cannot flip it twice
    again = down.status.model_copy(update={"llm_retry": BACKING_OFF.model_copy(update={"attempts": 3})})
    quiet = reconcile(seen(again), NOW)
    assert quiet.status is again and events(quiet) == [] and not quiet.guarded  # a further attempt: no write
    back = reconcile(seen(again.model_copy(update={"llm_retry": None})), NOW)
    assert cond(back, "LLMAvailable").status == "True" and events(back) == [("Normal", "LLMRecovered")] and back.guarded
    gave_up = enter(again, Phase.FAILED, "LLMError", "gave up", now=NOW).model_copy(update={"llm_retry": None})
    assert cond(reconcile(seen(gave_up), NOW), "LLMAvailable").status == "False"  # no recovery for a run that gave up
