"""Forking a run on the real stack: `kubechain fork` and a plain TaskRun with spec.forkOf.

A fork copies its source's conversation and journal up to step N (sealed chunks included), runs no call of
the source again (an http tool with effects counts its POSTs), answers a human-input step with --input, and
leaves the source untouched."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kubernetes import config

from kubechain.clients.transcript import complete

from .chaos import EffectCounter
from .conftest import agent, llm, secret, task

pytestmark = pytest.mark.integration


def cli(kube, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubechain.clients.cli", *args, "-n", kube.namespace],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(kube.env.kubeconfig)})


def setup(kube, stack, name: str, script: list[dict], tools: list[dict]) -> str:
    model = f"{kube.namespace}-{name}"
    stack.llm.set_script(model, script)
    kube.apply([secret(), llm(name, stack.llm.base_url, model),
                {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": name},
                 "spec": {"tools": tools}}, agent(name, name, [name])])
    kube.wait_ready("agent", name)
    return model


def transcript(kube, run: dict):
    """(messages as wire dicts, journal) of a run, sealed chunks included."""
    _, messages, calls = complete(run, config.new_client_from_config(config_file=str(kube.env.kubeconfig)))
    return [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in messages], calls


def requests_of(stack, model: str) -> list[dict]:
    return [r for r in stack.llm.requests() if r["model"] == model]


def checkpoint(run: dict) -> dict:
    """What a run's actor writes of it: a fork only reads these of its source."""
    return {k: run["status"].get(k) for k in ("phase", "step", "epoch", "contextWindow", "toolCallHistory",
                                              "sealedContext", "output", "usage")}


def as_sent(messages: list[dict]) -> list[tuple]:
    return [(m["role"], m.get("content"), m.get("tool_call_id")) for m in messages]


@pytest.fixture
def counter():
    server = EffectCounter()
    yield server
    server.close()


def test_a_fork_at_step_2_repeats_no_call_and_leaves_the_source_untouched(kube, stack, counter):
    http = {"http": {"url": counter.url}}
    model = setup(kube, stack, "clerk", [
        {"tool_calls": [{"name": "charge", "arguments": {"amount": 5}}]},
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
        {"tool_calls": [{"name": "book", "arguments": {"seat": "1A"}}]},
        {"content": "booked: {last_tool_result}"}],
        [{"name": "charge", "description": "charge a card", "execution": http},
         {"name": "book", "description": "book a seat", "execution": http},
         {"name": "calculator", "description": "math", "execution": {"builtin": {"name": "calculator"}}}])
    kube.apply([task("trip", "clerk", "Charge 5, add 2+2, book 1A.")])
    source = kube.wait_phase("trip-run", "Completed")
    source_uid = source["metadata"]["uid"]
    assert [p["body"] for p in counter.posts] == [{"amount": 5}, {"seat": "1A"}]
    asked_before = len(requests_of(stack, model))

    # Refused, naming the field: a step beyond the source, a run that does not exist.
    result = cli(kube, "fork", "trip-run", "--at-step", "9")
    assert result.returncode == 1 and "spec.forkOf.step: 9 is beyond TaskRun 'trip-run''s step 4" in result.stderr
    assert 'taskruns.kubechain.dev "nope" not found' in cli(kube, "fork", "nope", "--at-step", "1").stderr
    result = kube.apply([{"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "orphan"},
                          "spec": {"forkOf": {"name": "nope", "step": 1}}}], check=False)
    assert result.returncode != 0 and "spec.forkOf.name: TaskRun 'nope' not found" in result.stderr

    result = cli(kube, "fork", "trip-run", "--at-step", "2", "--name", "trip-fork")
    assert result.returncode == 0, result.stderr
    fork = kube.wait_phase("trip-fork", "Completed")
    status = fork["status"]
    assert status["output"] == "booked: ok {\"seat\": \"1A\"}"
    assert status["forkedFrom"] == {"name": "trip-run", "uid": source_uid, "step": 2}
    assert fork["metadata"]["labels"]["kubechain.dev/forked-from"] == "trip-run"
    assert "Forked" in [e["reason"] for e in kube.events("trip-fork")]

    # Nothing of steps 1-2 ran again; the fork's own step 3 booked under the fork's own key.
    assert [p["body"] for p in counter.of(source_uid)] == [{"amount": 5}, {"seat": "1A"}]
    assert [(p["body"], p["key"].split("/")[1]) for p in counter.of(fork["metadata"]["uid"])] == [({"seat": "1A"}, "3")]
    assert len(counter.posts) == 3

    # The fork's conversation is the source's up to step 2's results, then its own steps.
    source_messages, _ = transcript(kube, source)
    fork_messages, calls = transcript(kube, fork)
    assert fork_messages[:6] == source_messages[:6] and len(fork_messages) == len(source_messages)
    assert [(c.step, c.tool, c.state.value, c.idempotency_key.split("/")[0]) for c in calls] == [
        (1, "charge", "Succeeded", fork["metadata"]["uid"]), (2, "calculator", "Succeeded", fork["metadata"]["uid"]),
        (3, "book", "Succeeded", fork["metadata"]["uid"])]
    fork_requests = requests_of(stack, model)[asked_before:]
    assert [r["step"] for r in fork_requests] == [2, 3]  # the LLM was asked from step 3 on, with steps 1-2 copied
    assert as_sent(fork_requests[0]["messages"]) == as_sent(source_messages[:6])
    assert status["step"] == 4 and status["usage"]["totalTokens"] < source["status"]["usage"]["totalTokens"]

    # The source is untouched, and forkOf cannot change.
    after = kube.get("taskrun", "trip-run")
    assert (after["spec"], checkpoint(after)) == (source["spec"], checkpoint(source))
    result = kube.run("patch", "taskrun", "trip-fork", "--type", "merge", "-p",
                      json.dumps({"spec": {"forkOf": {"name": "trip-run", "step": 1}}}), check=False)
    assert result.returncode != 0 and "spec.forkOf cannot change" in result.stderr


ASK = {"name": "ask", "description": "ask the user", "execution": {"builtin": {"name": "ask_human"}}}


def test_a_fork_at_a_human_input_step_takes_another_answer(kube, stack):
    setup(kube, stack, "helpdesk", [{"tool_calls": [{"name": "ask", "arguments": {"question": "Which colour?"}}]},
                                    {"content": "You chose {last_tool_result}."}], [ASK])
    kube.apply([task("pick", "helpdesk", "Pick a colour for me")])
    paused = kube.wait_phase("pick-run", "PausedForUserInput")

    result = cli(kube, "fork", "pick-run", "--at-step", "1")
    assert result.returncode == 1 and "set spec.forkOf.input (kubechain fork --input)" in result.stderr
    assert cli(kube, "fork", "pick-run", "--at-step", "1", "--input", "red", "--name", "pick-red").returncode == 0
    red = kube.wait_phase("pick-red", "Completed")
    assert red["status"]["output"] == "You chose red."
    [question] = red["status"]["toolCallHistory"][-1:]
    assert (question["state"], question["result"], question["response"]) == (
        "Succeeded", "red", {"answer": "red", "by": "kubechain fork"})

    # The original still waits, untouched, and takes its own answer.
    still = kube.get("taskrun", "pick-run")
    assert (still["spec"], checkpoint(still)) == (paused["spec"], checkpoint(paused))
    assert cli(kube, "respond", "pick-run", "teal").returncode == 0
    assert kube.wait_phase("pick-run", "Completed")["status"]["output"] == "You chose teal."

    # Once answered, a fork at that step replaces the answer.
    assert cli(kube, "fork", "pick-run", "--at-step", "1", "--input", "blue", "--name", "pick-blue").returncode == 0
    blue = kube.wait_phase("pick-blue", "Completed")
    assert blue["status"]["output"] == "You chose blue."
    messages, _ = transcript(kube, blue)
    assert [m.get("content") for m in messages if m["role"] == "tool"] == ["blue"]
    assert kube.get("taskrun", "pick-run")["status"]["output"] == "You chose teal."


def test_a_long_run_is_forked_with_its_sealed_chunks(kube, stack):
    """A plain TaskRun with spec.forkOf: its first actor reads the source's chunks and seals its own."""
    steps = [{"tool_calls": [{"name": "echo", "arguments": {"i": i, "blob": f"{i}" + "x" * 3000}}]} for i in range(6)]
    model = setup(kube, stack, "parrot", steps + [{"content": "all echoed"}],
                  [{"name": "echo", "description": "echo", "execution": {"builtin": {"name": "echo"}}}])
    kube.apply([task("long", "parrot", "Echo six blobs.")])
    source = kube.wait_phase("long-run", "Completed")
    sealed = source["status"]["sealedContext"]
    assert sealed["chunks"] > 0 and sealed["messages"] >= 4  # steps the fork keeps are out of line
    asked_before = len(requests_of(stack, model))

    kube.apply([{"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "long-fork"},
                 "spec": {"forkOf": {"name": "long-run", "step": 4}}}])
    fork = kube.wait_phase("long-fork", "Completed")
    assert fork["status"]["output"] == "all echoed" and fork["status"]["forkedFrom"]["step"] == 4
    assert fork["metadata"]["labels"]["kubechain.dev/forked-from"] == "long-run"

    source_messages, source_calls = transcript(kube, source)
    fork_messages, fork_calls = transcript(kube, fork)
    assert fork_messages == source_messages  # the same script from step 5 on: the whole conversation is equal
    assert [json.loads(c.result)["i"] for c in fork_calls] == [json.loads(c.result)["i"] for c in source_calls]
    assert [r["step"] for r in requests_of(stack, model)[asked_before:]] == [4, 5, 6]
    assert fork["status"]["sealedContext"]["chunks"] > 0
    configmaps = json.loads(kube.run("get", "configmaps", "-l", "kubechain.dev/taskrun=long-fork", "-o",
                                     "json").stdout)["items"]
    assert configmaps and all(cm["metadata"]["ownerReferences"][0]["uid"] == fork["metadata"]["uid"]
                              for cm in configmaps)
    assert checkpoint(kube.get("taskrun", "long-run")) == checkpoint(source)
