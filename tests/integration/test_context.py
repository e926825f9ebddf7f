"""Conversations longer than the model's window: compacted (truncate or summarize) in checkpointed steps, at the
threshold of a declared window or on the provider's refusal, across an actor kill, with nothing lost from the
conversation; or failed with ContextLengthExceeded when the Agent says not to compact."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .chaos import kill_actor, wait_until
from .conftest import llm, secret, task

pytestmark = pytest.mark.integration
WINDOW = 6000
NOTES = 40
FIRST_ACTOR_SECONDS = 180  # see test_llm_faults


def note_taker(kube, stack, strategy: str, declared: bool, latency: float = 0.0) -> str:
    """An agent that writes NOTES notes of 2 KB with the echo builtin against a model whose window is WINDOW tokens
    (the scripted server refuses longer prompts); the LLM declares the window only if `declared`."""
    model = f"{kube.namespace}-model"
    note = {"name": "echo", "arguments": {"note": "n" * 2048}}
    stack.llm.set_script(model, [{"tool_calls": [note], "context_window": WINDOW, "latency": latency}] * NOTES
                         + [{"content": "all noted", "context_window": WINDOW}])
    window = {"contextWindowTokens": WINDOW} if declared else {}
    kube.apply([secret(), llm("model", stack.llm.base_url, model, **window),
                {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": "notes"},
                 "spec": {"tools": [{"name": "echo", "description": "write a note",
                                     "execution": {"builtin": {"name": "echo"}}}]}},
                {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "scribe"},
                 "spec": {"llmRef": {"name": "model"}, "systemPrompt": "Take notes.", "toolsetRefs": [{"name": "notes"}],
                          "context": {"strategy": strategy}}}])
    kube.wait_ready("agent", "scribe")
    return model


def transcript(kube, stack, name: str) -> list[dict]:
    printed = subprocess.run([sys.executable, "-m", "kubechain.clients.cli", "transcript", name, "-n", kube.namespace,
                              "--json"], env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)},
                             capture_output=True, text=True, check=True).stdout
    return json.loads(printed)


def asked(stack, model: str) -> list[dict]:
    return [r for r in stack.llm.requests() if r["model"] == model]


def check_nothing_lost(messages: list[dict], compactions: int) -> None:
    markers = [m for m in messages if m.get("name") == "kubechain-compaction"]
    assert len(markers) == compactions >= 1
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert len(results) == NOTES == len(set(results))  # every note once, in the conversation as it happened
    assert all(len(m["content"]) > 2048 for m in messages if m["role"] == "tool")  # whole, not elided


def test_forty_notes_against_a_declared_window_are_truncated_before_the_provider_refuses(kube, stack):
    model = note_taker(kube, stack, "truncate", declared=True)
    kube.apply([task("notes", "scribe", "Write forty notes.")])
    run = kube.wait_phase("notes-run", "Completed", timeout=FIRST_ACTOR_SECONDS)["status"]
    requests = asked(stack, model)
    assert [r["status"] for r in requests] == [200] * (NOTES + 1)  # never refused, never a step asked twice
    assert sorted(r["step"] for r in requests) == list(range(NOTES + 1))
    context = run["context"]
    assert context["compactions"] >= 2 and context["elidedThrough"] > 2 and context["tokens"] < WINDOW
    check_nothing_lost(transcript(kube, stack, "notes-run"), context["compactions"])
    events = [e for e in kube.events("notes-run") if e["reason"] == "ContextCompacted"]
    assert len(events) == context["compactions"] and "the journal keeps everything" in events[0]["message"]
    assert run["output"] == "all noted" and run["usage"]["totalTokens"] > 0


def test_a_refusal_without_a_declared_window_is_summarised_and_survives_an_actor_kill(kube, stack):
    model = note_taker(kube, stack, "summarize", declared=False, latency=0.1)
    kube.apply([task("summed", "scribe", "Write forty notes.")])
    compacted = kube.wait_for("taskrun", "summed-run", lambda o: ((o.get("status") or {}).get("context") or {})
                              .get("compactions"), FIRST_ACTOR_SECONDS, "compacted once")["status"]
    kill_actor(stack, compacted["actor"]["name"])
    run = kube.wait_phase("summed-run", "Completed", timeout=120)["status"]
    assert run["epoch"] >= 2 and run["output"] == "all noted"
    requests = asked(stack, model)
    summaries = [r for r in requests if r["messages"][0]["content"].startswith("Summarise the conversation")]
    refused = [r for r in requests if r["status"] == 400]
    assert refused and len(refused) <= run["context"]["compactions"]  # each refusal answered by a compaction
    assert len(summaries) >= run["context"]["compactions"] and all(not r["tools"] for r in summaries)
    assert run["context"]["summary"].startswith("Summary of ")
    # After a compaction the model is sent the summary, never the summarised notes again.
    last = next(r for r in reversed(requests) if r["status"] == 200 and r not in summaries)
    assert "Summary of " in last["messages"][2]["content"]
    assert sum(len(m.get("content") or "") for m in last["messages"]) < WINDOW * 4
    check_nothing_lost(transcript(kube, stack, "summed-run"), run["context"]["compactions"])
    # Every step answered once (a step refused for its length is asked again after the compaction), but the one the
    # kill interrupted: a reply that calls only builtins is checkpointed with their results, so it may be asked twice.
    answered = [[r["status"] for r in requests if r["step"] == step and r not in summaries].count(200)
                for step in range(NOTES + 1)]
    assert min(answered) == 1 and sum(answered) <= NOTES + 2, answered


def test_an_agent_that_does_not_compact_fails_with_context_length_exceeded(kube, stack):
    model = note_taker(kube, stack, "none", declared=True)
    kube.apply([task("full", "scribe", "Write forty notes.")])
    run = kube.wait_phase("full-run", "Failed", timeout=FIRST_ACTOR_SECONDS)["status"]
    assert run["phaseHistory"][-1]["reason"] == "ContextLengthExceeded"
    assert "Agent.spec.context.strategy is none" in run["error"] and "maximum context length is 6000" in run["error"]
    assert "context" not in run and asked(stack, model)[-1]["status"] == 400
    wait_until(lambda: any(e["reason"] == "ContextLengthExceeded" for e in kube.events("full-run")), timeout=10,
               what="the ContextLengthExceeded Event")
