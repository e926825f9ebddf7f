"""Human in the loop through kubectl and the CLI, and run limits (maxTurns, timeout, TTL)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from .chaos import actors, wait_until
from .conftest import agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration


def cli(kube, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubechain.clients.cli", *args, "-n", kube.namespace], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "KUBECONFIG": str(kube.env.kubeconfig)})


def helpdesk(kube, stack, steps: list[dict], tools: list[dict], name: str = "helpdesk") -> None:
    model = f"{kube.namespace}-{name}"
    stack.llm.set_script(model, steps)
    kube.apply([secret(), llm(name, stack.llm.base_url, model), toolset(f"{name}-tools", inline=tools),
                agent(name, name, [f"{name}-tools"])])
    kube.wait_ready("agent", name)


ASK = {"name": "ask", "description": "ask the user", "execution": {"builtin": {"name": "ask_human"}}}
GUARDED = {"name": "calc", "description": "arithmetic, needs a human's OK", "requiresApproval": True,
           "execution": {"builtin": {"name": "calculator"}}}


def no_actor(stack, namespace: str, name: str) -> bool:
    return not [a for a in actors(stack) if a["state"] == "ALIVE" and a.get("name", "").startswith(f"{namespace}/{name}/")]


def test_ask_human_pauses_without_an_actor_and_a_kubectl_patch_resumes_it(kube, stack):
    helpdesk(kube, stack, [{"tool_calls": [{"name": "ask", "arguments": {"question": "Which colour?"}}]},
                           {"content": "You chose {last_tool_result}."}], [ASK])
    kube.apply([task("pick", "helpdesk", "Pick a colour for me")])
    paused = kube.wait_phase("pick-run", "PausedForUserInput")
    [record] = paused["status"]["toolCallHistory"]
    assert (record["state"], record["waitingFor"], record["question"]) == ("Waiting", "Answer", "Which colour?")
    assert record["id"] in paused["status"]["message"] or "spec.responses" in paused["status"]["message"]
    wait_until(lambda: no_actor(stack, kube.namespace, "pick-run"), timeout=10, what="no actor while paused")

    # Refused by the validating webhook, changing nothing: an unknown call id, an approval where an answer is awaited.
    bad = {"nope": {"answer": "x"}, record["idempotencyKey"]: {"approved": True}}
    result = kube.run("patch", "taskrun", "pick-run", "--type", "merge", "-p", json.dumps({"spec": {"responses": bad}}),
                      check=False)
    assert result.returncode != 0
    assert "nope: no such tool call" in result.stderr and "waits for an `answer`" in result.stderr
    assert "responses" not in kube.get("taskrun", "pick-run")["spec"]

    # A reply under the LLM's bare call id is refused, naming the call's key.
    result = kube.run("patch", "taskrun", "pick-run", "--type", "merge", "-p",
                      json.dumps({"spec": {"responses": {record["id"]: {"answer": "teal"}}}}), check=False)
    assert result.returncode != 0 and f"use {record['idempotencyKey']}" in result.stderr

    # The documented answer: one merge patch keyed by the call's key (its idempotencyKey).
    answer = {record["idempotencyKey"]: {"answer": "teal", "by": "alice"}}
    kube.run("patch", "taskrun", "pick-run", "--type", "merge", "-p", json.dumps({"spec": {"responses": answer}}))
    done = kube.wait_phase("pick-run", "Completed")
    assert done["status"]["output"] == "You chose teal."
    assert done["status"]["toolCallHistory"][0]["response"] == {"answer": "teal", "by": "alice"}
    assert [t["reason"] for t in done["status"]["phaseHistory"]] == ["Scheduled", "WaitingForInput", "InputReceived",
                                                                    "FinalAnswer"]
    # The actor after the pause is a resumption, not a crash recovery: its own Event, and no recovery counted.
    reasons = [e["reason"] for e in kube.events("pick-run")]
    assert "ActorResumed" in reasons and "ActorRestarted" not in reasons
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read().decode()
    assert f'kubechain_taskrun_recoveries_total{{namespace="{kube.namespace}"}}' not in metrics

    # A second, different answer to the same call is refused; the run is untouched.
    result = kube.run("patch", "taskrun", "pick-run", "--type", "merge", "-p",
                      json.dumps({"spec": {"responses": {record["idempotencyKey"]: {"answer": "red"}}}}), check=False)
    assert result.returncode != 0 and "already answered" in result.stderr
    assert kube.get("taskrun", "pick-run")["spec"]["responses"] == answer
    # The CLI refuses bad replies before writing anything.
    result = cli(kube, "respond", "pick-run", "blue")
    assert result.returncode == 1 and "is Completed, not waiting for a human" in result.stderr


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_approval_through_the_cli(kube, stack, decision):
    helpdesk(kube, stack, [{"tool_calls": [{"name": "calc", "arguments": {"expression": "6*7"}}]},
                           {"content": "Result: {last_tool_result}"}], [GUARDED])
    kube.apply([task("sum", "helpdesk", "What is 6*7?")])
    paused = kube.wait_phase("sum-run", "PausedForUserInput")
    [record] = paused["status"]["toolCallHistory"]
    assert record["waitingFor"] == "Approval" and "calc(" in record["question"]
    assert cli(kube, "respond", "sum-run", "hi").stderr.startswith("refused: TaskRun sum-run has 0 calls waiting for an answer")
    assert "not waiting for approval" in cli(kube, decision, "sum-run", "--call", "other", "--reason", "r").stderr

    result = cli(kube, decision, "sum-run", "--reason", "not today")
    assert result.returncode == 0, result.stderr
    done = kube.wait_phase("sum-run", "Completed")
    expected = "Result: 42" if decision == "approve" else "Result: Error: rejected by a human: not today"
    assert done["status"]["output"] == expected
    assert done["status"]["toolCallHistory"][0]["response"]["approved"] is (decision == "approve")


def test_an_approval_that_times_out_is_a_rejection(kube, stack):
    helpdesk(kube, stack, [{"tool_calls": [{"name": "calc", "arguments": {"expression": "1+1"}}]},
                           {"content": "Result: {last_tool_result}"}], [{**GUARDED, "approvalTimeoutSeconds": 2}])
    kube.apply([task("sum", "helpdesk", "What is 1+1?")])
    kube.wait_phase("sum-run", "PausedForUserInput")
    done = kube.wait_phase("sum-run", "Completed", timeout=30)
    assert done["status"]["output"].startswith("Result: Error: rejected by a human: no decision before the approval")


def test_max_turns_and_timeout_fail_the_run(kube, stack):
    helpdesk(kube, stack, [{"tool_calls": [{"name": "calc2", "arguments": {"expression": "1"}}]}],
             [{"name": "calc2", "description": "math", "execution": {"builtin": {"name": "calculator"}}}], "looper")
    kube.apply([task("forever", "looper", "loop", maxTurns=3)])
    failed = kube.wait_phase("forever-run", "Failed")
    assert failed["status"]["phaseHistory"][-1]["reason"] == "MaxTurnsExceeded" and failed["status"]["step"] == 3

    helpdesk(kube, stack, [{"content": "too late", "latency": 60}], [ASK], "slow")
    kube.apply([task("slow", "slow", "take your time", timeoutSeconds=3)])
    started = time.monotonic()
    timed_out = kube.wait_phase("slow-run", "Failed", timeout=30)
    assert timed_out["status"]["phaseHistory"][-1]["reason"] == "Timeout"
    assert time.monotonic() - started < 15
    wait_until(lambda: no_actor(stack, kube.namespace, "slow-run"), timeout=10, what="the timed-out actor stopped")
    assert kube.get("task", "slow")["status"]["phase"] == "Failed"


def test_ttl_deletes_a_finished_run_and_the_cli_follows_a_run(kube, stack):
    helpdesk(kube, stack, [{"content": "hello there"}], [ASK], "greeter")
    result = cli(kube, "run", "greeter", "hi", "--name", "greet", "--follow", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    assert "[user] hi" in result.stdout and "[assistant] hello there" in result.stdout
    assert result.stdout.strip().endswith("hello there")
    assert kube.get("task", "greet")["status"]["phase"] == "Completed"

    kube.apply([task("brief", "greeter", "hi", ttlSecondsAfterFinished=1)])
    kube.wait_phase("brief-run", "Completed")
    wait_until(lambda: kube.run("get", "taskrun", "brief-run", check=False).returncode != 0, timeout=20,
               what="the TaskRun deleted after its TTL")
    assert kube.get("task", "brief")["status"]["output"] == "hello there"
