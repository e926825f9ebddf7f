"""Runs that cannot be restored end, and say why: a step that loses its actor every time fails with CrashLoop
after spec.crashLoopLimit attempts; a sealed chunk deleted or rewritten fails the run with CheckpointCorrupt
naming it, never a restart loop and never taken for a deleted run."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from kubechain.api.context import configmaps, decode, describe, described

from .chaos import actors, wait_until
from .conftest import agent, llm, secret, task

pytestmark = pytest.mark.integration
FIRST_ACTOR_SECONDS = 180  # see test_llm_faults


def run_actors(stack, kube, run: str) -> list[dict]:
    prefix = f"{kube.namespace}/{run}/"
    return [a for a in actors(stack) if a.get("name", "").startswith(prefix)]


def test_a_step_that_loses_its_actor_every_time_fails_crash_loop_after_the_limit(kube, stack):
    model = f"{kube.namespace}-model"
    stack.llm.set_script(model, [{"content": "never seen", "latency": 30}])  # every actor dies mid-request
    kube.apply([secret(), llm("model", stack.llm.base_url, model), agent("fragile", "model")])
    kube.wait_ready("agent", "fragile")
    kube.apply([task("loop", "fragile", "hello", crashLoopLimit=3)])
    killed: set[int] = set()

    def kill_each_actor_while_it_asks() -> bool:
        """Kill the run's live actor once it has sent its request (so the step never checkpoints)."""
        run = kube.get("taskrun", "loop-run")
        if (run.get("status") or {}).get("phase") == "Failed":
            return True
        asked = len([r for r in stack.llm.requests() if r["model"] == model])
        for actor in run_actors(stack, kube, "loop-run"):
            if actor["state"] == "ALIVE" and actor.get("pid") and actor["pid"] not in killed and asked > len(killed):
                os.kill(actor["pid"], signal.SIGKILL)
                killed.add(actor["pid"])
        return False
    wait_until(kill_each_actor_while_it_asks, timeout=FIRST_ACTOR_SECONDS + 60, what="the run failing CrashLoop")
    status = kube.wait_phase("loop-run", "Failed", timeout=10)["status"]
    assert status["phaseHistory"][-1]["reason"] == "CrashLoop"
    assert status["error"].startswith("the actor was lost 3 times at step 0 without checkpointing a step "
                                      "(spec.crashLoopLimit 3); the last time: ")
    assert status["crashes"]["count"] == 3 and len(killed) == 3
    events = kube.events("loop-run")
    assert [e["reason"] for e in events].count("ActorLost") == 2 and any(e["reason"] == "CrashLoop" for e in events)
    time.sleep(3)  # and nothing starts again: no new actor, no new request
    asked = len([r for r in stack.llm.requests() if r["model"] == model])
    assert asked == 3 and not [a for a in run_actors(stack, kube, "loop-run") if a["state"] == "ALIVE"]


def paused_with_chunks(kube, stack, name: str) -> dict:
    """A run that sealed chunks of its conversation, paused for a human (no actor holds it)."""
    model = f"{kube.namespace}-{name}"
    notes = [{"tool_calls": [{"name": "echo", "arguments": {"i": i, "note": "n" * 4000}}]} for i in range(6)]
    stack.llm.set_script(model, notes + [{"tool_calls": [{"name": "ask", "arguments": {"question": "go on?"}}]},
                                         {"content": "finished"}])
    kube.apply([secret(), llm(name, stack.llm.base_url, model),
                {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": "notes"},
                 "spec": {"tools": [{"name": "echo", "description": "note", "execution": {"builtin": {"name": "echo"}}},
                                    {"name": "ask", "description": "ask", "execution": {"builtin": {"name": "ask_human"}}}]}},
                agent(name, name, ["notes"])])
    kube.wait_ready("agent", name)
    kube.apply([task(name, name, "take notes, then ask")])
    return kube.wait_phase(f"{name}-run", "PausedForUserInput", timeout=FIRST_ACTOR_SECONDS)


def answer(kube, run: dict) -> None:
    waiting = next(c for c in run["status"]["toolCallHistory"] if c["state"] == "Waiting")
    kube.run("patch", "taskrun", run["metadata"]["name"], "--type", "merge",
             "-p", json.dumps({"spec": {"responses": {waiting["idempotencyKey"]: {"answer": "yes"}}}}))


def test_a_deleted_chunk_fails_the_resumed_run_checkpoint_corrupt_naming_it(kube, stack):
    run = paused_with_chunks(kube, stack, "deleted")
    assert run["status"]["sealedContext"]["chunks"] >= 2
    kube.run("delete", "configmap", "deleted-run-ctx-0001-0")
    answer(kube, run)
    status = kube.wait_phase("deleted-run", "Failed", timeout=60)["status"]
    assert status["phaseHistory"][-1]["reason"] == "CheckpointCorrupt"
    assert status["error"] == "sealed chunk deleted-run-ctx-0001-0 (chunk 1) is missing"
    assert status["contextWindow"] == run["status"]["contextWindow"]  # the tail is left as it was
    wait_until(lambda: any(e["reason"] == "CheckpointCorrupt" for e in kube.events("deleted-run")), timeout=10,
               what="the CheckpointCorrupt Event")
    assert status["epoch"] == run["status"]["epoch"] + 1  # one actor tried, none after it


def test_a_chunk_rewritten_to_match_itself_is_caught_by_the_status_checksum(kube, stack):
    run = paused_with_chunks(kube, stack, "forged")
    part = kube.get("configmap", "forged-run-ctx-0000-0")
    messages, calls = decode(described(part), [part["data"]["chunk.json"]])
    messages[2].content = "FORGED"  # a consistent rewrite: the chunk's own checksum matches its new text
    from kubechain.api.context import encode
    text = encode(messages, calls)
    forged = configmaps("forged-run", run["metadata"]["uid"], describe("forged-run-ctx-0000", text, len(messages),
                                                                          len(calls), 1), text)[0]
    kube.run("replace", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap", **forged}))
    answer(kube, run)
    status = kube.wait_phase("forged-run", "Failed", timeout=60)["status"]
    assert status["phaseHistory"][-1]["reason"] == "CheckpointCorrupt"
    assert "do not match status.sealedContext.sha256" in status["error"]
    requests = [r for r in stack.llm.requests() if r["model"] == f"{kube.namespace}-forged"]
    assert not any("FORGED" in json.dumps(r["messages"]) for r in requests)  # never sent to the model
