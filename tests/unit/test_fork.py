"""Forking a run: the pure cut (core/fork.py), admission, the Pending fork's edges, and the actor's copy of a
source with sealed chunks (actors/fork.py over a fake apiserver, the seal thresholds lowered)."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from actors import layout
from actors.checkpoint import KubeCheckpointStore
from actors.fork import start
from kubechain.api.context import COMPACTION_MARKER, configmaps
from kubechain.api.runspec import ForkPlan, RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import (CallState, ContextState, ForkedFrom, ForkOf, FunctionCall, HumanResponse, LLMSpec,
                                    Message, Phase, TaskRunSpec, TaskRunStatus, ToolCall, ToolCallRecord, WaitingFor)
from kubechain.core import admission
from kubechain.core import effects as do
from kubechain.core.fork import ANSWERED_BY, ForkError, ForkSource, StepCall, cut, label_value, source_of, source_problem
from kubechain.core.lifecycle import enter
from kubechain.core.observation import Admitted, Observed, Target, Trigger
from kubechain.core.reconciler import reconcile

SRC = "src-uid"
NOW = "2026-12-01T12:00:00.000Z"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def reply(step: int, *tools: str) -> Message:
    calls = [ToolCall(id=f"c{step}{i}", function=FunctionCall(name=t, arguments="{}")) for i, t in enumerate(tools)]
    return Message(role="assistant", content=None if tools else "the answer", tool_calls=calls or None)


def result(step: int, i: int = 0, text: str = "ok") -> Message:
    return Message(role="tool", tool_call_id=f"c{step}{i}", content=f"{text} {step}")


def record(step: int, tool: str, state: CallState = CallState.SUCCEEDED, i: int = 0, **fields) -> ToolCallRecord:
    return ToolCallRecord(id=f"c{step}{i}", step=step, tool=tool, arguments="{}", state=state,
                          idempotency_key=f"{SRC}/{step}/c{step}{i}", **fields)


HEAD = [Message(role="system", content="be brief"), Message(role="user", content="charge, add, book")]
MARKER = Message(role="system", name=COMPACTION_MARKER, content="compacted")
# Three tool steps (charge: http, calc: builtin, book: http), a compaction before step 3, then the answer.
MESSAGES = [*HEAD, reply(1, "charge"), result(1), reply(2, "calc"), result(2), MARKER, reply(3, "book"), result(3),
            reply(4)]
CALLS = [record(1, "charge"), record(2, "calc"), record(3, "book")]


def fork(step: int, answer: str | None = None) -> ForkOf:
    return ForkOf(name="src", step=step, input=answer)


# --- the cut ------------------------------------------------------------------------------------------------
def test_a_fork_keeps_the_steps_up_to_n_with_their_results_and_nothing_after():
    piece = cut(MESSAGES, CALLS, None, fork(2), SRC, "fork-uid", NOW)
    assert piece.messages == MESSAGES[:6]  # the compaction made for step 3 is not the fork's
    assert [(c.step, c.tool, c.state) for c in piece.calls] == [(1, "charge", CallState.SUCCEEDED),
                                                                 (2, "calc", CallState.SUCCEEDED)]
    assert [c.idempotency_key for c in piece.calls] == ["fork-uid/1/c10", "fork-uid/2/c20"]  # the fork's own keys
    assert piece.calls[0].result is None and CALLS[0].idempotency_key == f"{SRC}/1/c10"  # the source is not touched
    assert piece.step == 2


@pytest.mark.parametrize("step, messages", [pytest.param(0, 2, id="step 0: the prompt and the input"),
                                            pytest.param(1, 4, id="step 1"),
                                            pytest.param(3, 9, id="the last step with calls")])
def test_cut_points(step, messages):
    piece = cut(MESSAGES, CALLS, None, fork(step), SRC, "f", NOW)
    assert piece.messages == MESSAGES[:messages] and piece.step == step
    assert all(c.step <= step for c in piece.calls) and len(piece.calls) == step


@pytest.mark.parametrize("step, problem", [
    pytest.param(5, "spec.forkOf.step: 5 is beyond TaskRun 'src''s 4 steps", id="beyond the source"),
    pytest.param(4, "spec.forkOf.step: step 4 is TaskRun 'src''s answer, with no tool calls: fork at step 3", id="the final answer"),
])
def test_cuts_that_are_refused(step, problem):
    with pytest.raises(ForkError, match="^" + problem.replace("(", r"\(").replace(")", r"\)")):
        cut(MESSAGES, CALLS, None, fork(step), SRC, "f", NOW)


def test_a_call_of_step_n_that_has_not_finished_is_never_copied():
    started = [*CALLS[:2], record(3, "book", CallState.STARTED)]
    with pytest.raises(ForkError, match=r"step 3 of TaskRun 'src' has calls that have not finished \(Started\), and a "
                                        r"fork never runs a call again: fork at step 2 to ask the LLM for step 3 again"):
        cut(MESSAGES[:8], started, None, fork(3), SRC, "f", NOW)


ASKED = [*HEAD, reply(1, "charge"), result(1), reply(2, "ask", "calc"), result(2, 1)]


def asked(state: CallState = CallState.WAITING, **fields) -> list[ToolCallRecord]:
    return [record(1, "charge"), record(2, "ask", state, waiting_for=WaitingFor.ANSWER, question="colour?", **fields),
            record(2, "calc", i=1)]


def test_input_answers_the_question_of_a_paused_step():
    piece = cut(ASKED, asked(), None, fork(2, "red"), SRC, "f", NOW)
    question = piece.calls[1]
    assert (question.state, question.result, question.response) == (
        CallState.SUCCEEDED, "red", HumanResponse(answer="red", by=ANSWERED_BY))
    assert question.idempotency_key == "f/2/c20" and question.end_time == NOW
    assert piece.messages == [*ASKED, Message(role="tool", tool_call_id="c20", content="red")]
    assert asked()[1].state is CallState.WAITING


def test_input_replaces_the_answer_the_source_got():
    answered = [*ASKED, Message(role="tool", tool_call_id="c20", content="teal"), reply(3)]
    piece = cut(answered, asked(CallState.SUCCEEDED, result="teal"), None, fork(2, "red"), SRC, "f", NOW)
    assert [m.content for m in piece.messages if m.role == "tool"] == ["ok 1", "ok 2", "red"]
    assert piece.calls[1].result == "red"


@pytest.mark.parametrize("answer, problem", [
    pytest.param(None, r"has calls that have not finished \(Waiting for Answer\), and a fork never runs a call again: "
                       r"set spec.forkOf.input \(kubechain fork --input\) to answer its question, or fork at step 1",
                 id="a question without input"),
    pytest.param("x", "spec.forkOf.input answers step 1's ask_human question: step 1 of TaskRun 'src' asks 0",
                 id="input at a step without a question"),
])
def test_input_problems(answer, problem):
    step = 1 if answer else 2
    with pytest.raises(ForkError, match=problem):
        cut(ASKED, asked(), None, fork(step, answer), SRC, "f", NOW)


def test_what_the_model_is_sent_is_kept_only_when_every_compaction_is_in_the_cut():
    state = ContextState(compactions=1, omitted_through=3)
    assert cut(MESSAGES, CALLS, state, fork(3), SRC, "f", NOW).context == state
    assert cut(MESSAGES, CALLS, state, fork(2), SRC, "f", NOW).context is None


# --- the source as admission and the operator see it ---------------------------------------------------------
def source(step: int = 2, phase: Phase = Phase.RUNNING, *calls: StepCall, agent: str = "clerk") -> ForkSource:
    return ForkSource(SRC, step, agent, phase, calls)


@pytest.mark.parametrize("fork_of, src, problem", [
    pytest.param(fork(2), source(), None, id="the latest step, its calls finished"),
    pytest.param(fork(1), source(2, Phase.RUNNING, StepCall(CallState.STARTED)), None, id="an earlier step"),
    pytest.param(fork(1), None, "spec.forkOf.name: TaskRun 'src' not found", id="no such run"),
    pytest.param(fork(0), source(0, Phase.PENDING, agent=""), "has not started", id="a run not started"),
    pytest.param(fork(3), source(), "spec.forkOf.step: 3 is beyond TaskRun 'src''s step 2", id="beyond"),
    pytest.param(fork(2), source(2, Phase.COMPLETED), "step 2 is TaskRun 'src''s final answer", id="the answer"),
    pytest.param(fork(2), source(2, Phase.RUNNING, StepCall(CallState.STARTED)), "(Started)", id="a call running"),
    pytest.param(fork(2), source(2, Phase.PAUSED_FOR_USER_INPUT, StepCall(CallState.WAITING, WaitingFor.ANSWER)),
                 "set spec.forkOf.input", id="a question without input"),
    pytest.param(fork(2, "red"), source(2, Phase.PAUSED_FOR_USER_INPUT, StepCall(CallState.WAITING, WaitingFor.ANSWER),
                                        StepCall(CallState.SUCCEEDED)), None, id="a question answered by input"),
])
def test_source_problems(fork_of, src, problem):
    found = source_problem(fork_of, src)
    assert found is None if problem is None else problem in found


def test_the_index_summary_of_a_raw_status():
    raw = {"step": 2, "agent": "clerk", "phase": "PausedForUserInput",
           "toolCallHistory": [{"step": 1, "state": "Succeeded"}, {"step": 2, "state": "Waiting", "waitingFor": "Answer"}]}
    assert source_of("u", raw) == ForkSource("u", 2, "clerk", Phase.PAUSED_FOR_USER_INPUT,
                                             (StepCall(CallState.WAITING, WaitingFor.ANSWER),))
    assert source_of("u", {}) == ForkSource("u", 0, "", Phase.PENDING)
    assert label_value("r" * 80) != label_value("r" * 81) and len(label_value("r" * 80)) == 63


def test_admission_of_a_fork():
    new = {"spec": {"forkOf": {"name": "src", "step": 2}}}
    assert admission.taskrun(new, None, lambda name: source() if name == "src" else None) == []
    assert admission.taskrun(new) == ["spec.forkOf.name: TaskRun 'src' not found"]
    assert admission.taskrun({"spec": {"forkOf": {"name": "src", "step": 9}}}, None, lambda _: source()) == [
        "spec.forkOf.step: 9 is beyond TaskRun 'src''s step 2"]
    moved = {"spec": {"forkOf": {"name": "src", "step": 1}}}
    assert admission.taskrun(moved, new) == ["spec.forkOf cannot change"]
    both = {"spec": {"forkOf": {"name": "src", "step": 1}, "agentRef": {"name": "a"}, "userInput": "hi"}}
    assert "or forkOf" in admission.taskrun(both)[0]
    child = {"spec": {"forkOf": {"name": "src", "step": 1}, "parent": {"name": "p", "uid": "u", "toolCallId": "c"}}}
    assert "a fork is a run of its own" in admission.taskrun(child)[0]


# --- pending forks (the reconciler) --------------------------------------------------------------------------
REF = TaskRunRef(namespace="ns", name="fork", uid="fork-uid")
FORK_SPEC = TaskRunSpec.model_validate({"forkOf": {"name": "src", "step": 2}})


def pending(status: TaskRunStatus, src: ForkSource | None, **fields) -> Observed:
    return Observed(Trigger.EVENT, REF, status, FORK_SPEC, ray_namespace="kc", fork_source=src,
                    target=Target(True, "clerk", True, "ok"), **fields)


def test_pending_fork_pins_its_source_first():
    decision = reconcile(pending(TaskRunStatus(), source()), T0)
    assert decision.status.phase is Phase.PENDING and decision.guarded
    assert decision.status.forked_from == ForkedFrom(name="src", uid=SRC, step=2)
    assert do.LabelRun((("kubechain.dev/forked-from", "src"), ("kubechain.dev/agent", "clerk"))) in decision.effects
    assert any(isinstance(e, do.PostEvent) and e.reason == "Forked" and "at step 2" in e.message
               for e in decision.effects)


def test_pinned_fork_starts_like_any_run():
    pinned = TaskRunStatus(forked_from=ForkedFrom(name="src", uid=SRC, step=2))
    decision = reconcile(pending(pinned, source(), slot=Admitted()), T0)
    assert decision.status.phase is Phase.RUNNING and decision.status.agent == "clerk"


@pytest.mark.parametrize("src, message", [
    pytest.param(None, "spec.forkOf.name: TaskRun 'src' not found", id="pending->failed: source deleted"),
    pytest.param(ForkSource("other", 2, "clerk", Phase.RUNNING), "was replaced", id="pending->failed: source replaced"),
])
def test_pending_fork_fails_when_its_source_goes(src, message):
    pinned = TaskRunStatus(forked_from=ForkedFrom(name="src", uid=SRC, step=2))
    decision = reconcile(pending(pinned, src), T0)
    assert decision.status.phase is Phase.FAILED and decision.status.phase_history[-1].reason == "ForkFailed"
    assert message in decision.status.error


# --- the actor's copy, over a fake apiserver ------------------------------------------------------------------
def merged(old: dict, patch: dict) -> dict:
    """A JSON merge patch (RFC 7386): null removes."""
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


class FakeAPI:
    """The few paths an actor uses: TaskRun status (GET, merge PATCH), ConfigMaps (GET, POST), Events (POST)."""

    def __init__(self):
        self.runs: dict[str, dict] = {}
        self.configmaps: dict[str, dict] = {}
        self.events: list[dict] = []

    async def send(self, method, path, body=None, content_type="application/json"):
        if isinstance(body, bytes):  # a body the store encoded itself
            body = json.loads(body)
        assert content_type != "application/json-patch+json", "a store's first write after a read is a merge patch"
        name = path.rstrip("/").split("/")[-2 if path.endswith("/status") else -1]
        if "/events" in path:
            self.events.append(body)
            return 201, body
        store = self.configmaps if "/configmaps" in path else self.runs
        if method == "POST":
            store[body["metadata"]["name"]] = body
            return 201, body
        if name not in store:
            return 404, {"reason": "NotFound", "message": f"{name} not found"}
        obj = store[name]
        if method == "PATCH":
            obj["status"] = merged(obj.get("status") or {}, body["status"])
            obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return 200, json.loads(json.dumps(obj))


def sealed_source(api: FakeAPI, messages: list[Message], calls: list[ToolCallRecord], step: int) -> TaskRunStatus:
    """A finished source run with most of it sealed, as its actor would have left it."""
    status = TaskRunStatus(phase=Phase.COMPLETED, step=step, agent="clerk", context_window=messages,
                           tool_call_history=calls)
    plan = layout.Layout("src")
    seal = plan.plan(status)
    assert seal is not None
    for body in configmaps("src", SRC, seal.chunk, seal.text):
        api.configmaps[body["metadata"]["name"]] = body
    plan.sealed(seal)
    tail = status.model_copy(update={"context_window": messages[plan.sealed_messages:],
                                     "tool_call_history": calls[plan.sealed_calls:], "sealed_context": plan.summary})
    api.runs["src"] = {"metadata": {"name": "src", "uid": SRC, "resourceVersion": "1"},
                       "status": merged({}, tail.to_wire())}
    return status


def test_the_actor_copies_a_sealed_source_into_the_forks_own_chunks(monkeypatch):
    monkeypatch.setattr(layout, "SEAL_BYTES", 600)
    monkeypatch.setattr(layout, "KEEP_BYTES", 200)
    monkeypatch.setattr(layout, "KEEP_MESSAGES", 2)
    blob = "x" * 200
    steps = 6
    messages, calls = list(HEAD), []
    for step in range(1, steps + 1):
        messages += [reply(step, "echo"), result(step, text=blob)]
        calls.append(record(step, "echo", result=blob))
    messages.append(reply(steps + 1))
    api = FakeAPI()
    sealed_source(api, messages, calls, steps + 1)
    assert api.runs["src"]["status"]["sealedContext"]["messages"] > 4  # the first steps live in ConfigMaps only
    fresh = enter(TaskRunStatus(epoch=1), Phase.RUNNING, "Scheduled", now=T0)
    api.runs["fork"] = {"metadata": {"name": "fork", "uid": "fork-uid", "resourceVersion": "1"},
                        "status": merged({}, fresh.to_wire())}
    spec = RunSpec(taskrun=REF, agent="clerk", llm=LLMSpec(model="m"), system_prompt="s", user_input="",
                   fork=ForkPlan(source=TaskRunRef(namespace="ns", name="src", uid=SRC), step=4))
    store = KubeCheckpointStore(REF, 1, rest=api, retry_seconds=1)

    async def copy():
        return await start(spec, api, store, await store.load())

    status = asyncio.run(copy())
    assert status.phase is Phase.RUNNING and status.step == 4
    assert status.context_window == messages[:2 + 2 * 4]
    assert [c.idempotency_key for c in status.tool_call_history] == [f"fork-uid/{s}/c{s}0" for s in range(1, 5)]
    written = api.runs["fork"]["status"]
    assert written["sealedContext"]["chunks"] == 1 and written["step"] == 4
    assert all(cm["metadata"]["ownerReferences"][0]["uid"] == "fork-uid"
               for name, cm in api.configmaps.items() if name.startswith("fork-ctx-"))
    assert asyncio.run(KubeCheckpointStore(REF, 1, rest=api).load()).context_window == status.context_window
    assert api.runs["src"]["metadata"]["resourceVersion"] == "1"  # the source is only read
    assert [e["reason"] for e in api.events] == ["Forked"]


def test_the_actor_fails_the_fork_when_its_source_was_replaced():
    api = FakeAPI()
    sealed_source(api, [*HEAD, reply(1, "echo"), result(1, text="y" * 7000), reply(2)], [record(1, "echo")], 2)
    api.runs["src"]["metadata"]["uid"] = "someone-else"
    fresh = enter(TaskRunStatus(epoch=1), Phase.RUNNING, "Scheduled", now=T0)
    api.runs["fork"] = {"metadata": {"name": "fork", "uid": "fork-uid", "resourceVersion": "1"}, "status": merged({}, fresh.to_wire())}
    spec = RunSpec(taskrun=REF, agent="clerk", llm=LLMSpec(model="m"), system_prompt="s", user_input="",
                   fork=ForkPlan(source=TaskRunRef(namespace="ns", name="src", uid=SRC), step=1))
    store = KubeCheckpointStore(REF, 1, rest=api, retry_seconds=1)

    async def copy():
        return await start(spec, api, store, await store.load())

    assert asyncio.run(copy()).phase is Phase.FAILED
    written = api.runs["fork"]["status"]
    assert written["phase"] == "Failed" and "was replaced" in written["error"]
    assert written["phaseHistory"][-1]["reason"] == "ForkFailed"
    assert not [name for name in api.configmaps if name.startswith("fork-")]


def test_the_cli_creates_a_fork_with_the_sources_limits():
    from kubechain.clients.forking import fork_body

    src = {"metadata": {"name": "trip-run", "labels": {"kubechain.dev/task": "trip"}},
           "spec": {"taskRef": {"name": "trip"}, "maxTurns": 9, "budget": {"maxTokens": 100}, "responses": {"k": {}}},
           "status": {"agent": "clerk"}}
    body = fork_body(src, 2, "red", "trip-red")
    assert body["metadata"] == {"name": "trip-red", "labels": {"kubechain.dev/forked-from": "trip-run",
                                                                "kubechain.dev/agent": "clerk"}}
    assert body["spec"] == {"maxTurns": 9, "budget": {"maxTokens": 100},
                            "forkOf": {"name": "trip-run", "step": 2, "input": "red"}}
    assert TaskRunSpec.model_validate(body["spec"]).fork_of == ForkOf(name="trip-run", step=2, input="red")
    assert fork_body(src, 1)["metadata"]["name"].startswith("trip-run-fork-")
