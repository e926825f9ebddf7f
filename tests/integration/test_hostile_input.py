"""Hostile input on the real stack: what an LLM (or a Tool's author) sends cannot stall a run's actor.

- The calculator bomb and the ReDoS pattern of issue 17 are tool errors the LLM reads; the step's other call and
  the run go on, and another run on the same stack keeps taking steps meanwhile (counted at the scripted server).
- A pattern the linear-time engine refuses is refused at admission, naming the field.
- An actor whose event loop stops answering (here: its process stopped) is found wedged by the operator's
  liveness pings, killed, and the run restored on a fresh actor from its checkpoint.
"""
from __future__ import annotations

import json
import os
import signal

import pytest

from .chaos import EffectCounter, actor_pid, wait_until
from .conftest import agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration

BOMB = "(9**9999)**3000"  # ran past 48 s in one uninterruptible call before the calculator bounded results
REDOS = "(a+)+$"          # `re` took 33.7 s for 29 characters; the LLM sends 34 and a `!`
PROBE = {"name": "probe", "description": "echo a code", "execution": {"builtin": {"name": "echo"}},
         "arguments": {"type": "object", "properties": {"code": {"type": "string", "pattern": REDOS}}}}
CALCULATOR = {"name": "calculator", "description": "math", "execution": {"builtin": {"name": "calculator"}}}
ECHO = {"name": "echo", "description": "echo", "execution": {"builtin": {"name": "echo"}}}


def requests_of(stack, model: str) -> list[dict]:
    return [r for r in stack.llm.requests() if r["model"] == model]


def run_of(name: str, agent_name: str, **spec) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"agentRef": {"name": agent_name}, "userInput": "go", **spec}}


def test_the_calculator_bomb_and_the_redos_pattern_are_tool_errors_while_other_runs_go_on(kube, stack):
    hostile, steady = f"{kube.namespace}-hostile", f"{kube.namespace}-steady"
    stack.llm.set_script(hostile, [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": BOMB}},
                        {"name": "probe", "arguments": {"code": "a" * 34 + "!"}},
                        {"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"content": "survived"}])
    stack.llm.set_script(steady, [{"tool_calls": [{"name": "echo", "arguments": {"n": 1}}], "latency": 0.2}])
    kube.apply([secret(), llm("hostile", stack.llm.base_url, hostile), llm("steady", stack.llm.base_url, steady),
                toolset("tools", inline=[CALCULATOR, PROBE, ECHO]),
                agent("a", "hostile", ["tools"]), agent("b", "steady", ["tools"])])
    kube.wait_ready("agent", "a")
    kube.wait_ready("agent", "b")
    kube.apply([run_of("steady", "b", maxTurns=1000)])  # steps until it is cancelled below
    wait_until(lambda: requests_of(stack, steady), timeout=120, what="the steady run's first step")

    kube.apply([task("t", "a", "hostile arithmetic")])
    before = len(requests_of(stack, steady))
    run = kube.wait_phase("t-run", "Completed", timeout=120)
    during = len(requests_of(stack, steady)) - before
    kube.run("patch", "taskrun", "steady", "--type", "merge", "-p", json.dumps({"spec": {"cancel": True}}))

    bomb, probe, product = run["status"]["toolCallHistory"]
    assert bomb["state"] == "Failed" and bomb["error"].startswith(
        "result too large: this power would have about 95,088,240 bits; the calculator computes integers of at "
        "most 65,536 bits")
    assert probe["state"] == "Failed" and f"does not match {REDOS!r}" in probe["error"]
    assert (product["state"], product["result"]) == ("Succeeded", "42")  # the step's other call went on
    assert run["status"]["output"] == "survived"
    told = [m["content"] for m in requests_of(stack, hostile)[-1]["messages"] if m["role"] == "tool"]
    assert sorted(told) == sorted([f"Error: {bomb['error']}", f"Error: {probe['error']}", "42"])  # the LLM read them
    assert during > 0, "the steady run took no step while the hostile one ran"
    kube.wait_phase("steady", "Failed", timeout=60)


def test_a_pattern_the_linear_time_engine_refuses_is_refused_naming_the_field(kube, stack):
    lookahead = {**PROBE, "arguments": {"type": "object", "properties": {"code": {"type": "string",
                                                                                  "pattern": "^(?=a)a+$"}}}}
    result = kube.apply([toolset("tools", inline=[lookahead])], check=False)
    assert result.returncode != 0
    assert ("tool 'probe': arguments.properties.code.pattern '^(?=a)a+$' is refused: invalid perl operator: (?= "
            "(patterns are matched by RE2, in linear time") in result.stderr


@pytest.fixture
def counter():
    server = EffectCounter()
    yield server
    server.close()


def test_a_wedged_actor_is_detected_by_its_heartbeat_and_replaced(kube, stack, counter):
    model = f"{kube.namespace}-m"
    # The reply's latency lets the supervisor's first ping be answered before the booking (the heartbeat is armed
    # by an answer; without one the actor gets 4 x KUBECHAIN_ACTOR_WEDGED_SECONDS, a start's allowance)
    stack.llm.set_script(model, [{"tool_calls": [{"name": "book", "arguments": {"seat": "1A"}}], "latency": 3},
                                 {"content": "booked: {last_tool_result}"}])
    book = {"name": "book", "description": "book a seat", "idempotent": True,
            "execution": {"http": {"url": counter.url, "timeoutSeconds": 300}}}
    kube.apply([secret(), llm("m", stack.llm.base_url, model), toolset("tools", inline=[book]), agent("a", "m", ["tools"])])
    kube.wait_ready("agent", "a")
    counter.hold(1, seconds=300)  # the run is in flight until the old actor is stopped
    kube.apply([task("t", "a", "book 1A")])
    wait_until(counter.held.is_set, timeout=120, what="the booking in flight")
    pid = actor_pid(stack, kube.get("taskrun", "t-run")["status"]["actor"]["name"])
    os.kill(pid, signal.SIGSTOP)  # alive for Ray, but nothing it runs answers: as a blocked event loop
    try:
        counter.release()
        wedged = kube.wait_for("events", "", lambda o: any(
            e["reason"] == "ActorWedged" and e["involvedObject"]["name"] == "t-run" for e in o["items"]),
            timeout=200, what="an ActorWedged Event")
        run = kube.wait_phase("t-run", "Completed", timeout=120)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)  # killed by then; if not, it must not stay stopped
        except ProcessLookupError:
            pass
    (event,) = [e for e in wedged["items"] if e["reason"] == "ActorWedged"]
    assert event["type"] == "Warning" and "has not answered a liveness ping" in event["message"]
    assert "KUBECHAIN_ACTOR_WEDGED_SECONDS" in event["message"]
    assert run["status"]["epoch"] == 2 and run["status"]["output"].startswith("booked: ok")
    (record,) = run["status"]["toolCallHistory"]
    assert (record["state"], record["attempts"]) == ("Succeeded", 2)  # re-run with the same idempotency key
    assert {p["key"] for p in counter.of(run["metadata"]["uid"])} == {record["idempotencyKey"]}
