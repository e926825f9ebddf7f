"""apply YAML → Ray actor → LLM ↔ tools → TaskRun Completed, on the real control plane, Ray head and LLM server."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from .conftest import LLM_KEY, agent, builtin_tool, llm, secret, task, toolset

pytestmark = pytest.mark.integration


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


def expected_usage(requests: list[dict], replies: list[str]) -> tuple[int, int]:
    """The scripted server's documented formula, recomputed from what it received."""
    prompt = 0
    for request in requests:
        chars = "".join((m.get("content") or "") + "".join(c["function"]["arguments"] for c in m.get("tool_calls") or [])
                        for m in request["messages"])
        prompt += tokens(chars)
    return prompt, sum(tokens(r) for r in replies)


def calc_agent(kube, model: str) -> None:
    kube.apply([secret(), llm("model", kube.env.llm.base_url, model), builtin_tool("calculator", "calculator"),
                toolset("math", refs=["calculator"],
                        inline=[{"name": "now", "description": "current time",
                                 "execution": {"builtin": {"name": "current_time"}}}]),
                agent("mathematician", "model", ["math"], prompt="Use the calculator.")])


def dashboard_actors(stack) -> list[dict]:
    request = urllib.request.Request(f"{stack.ray.dashboard_url}/api/v0/actors?limit=1000",
                                     headers={"Authorization": f"Bearer {stack.ray.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]["result"]["result"]


def test_task_runs_to_completion_with_tool_calls(kube, stack):
    model = f"{kube.namespace}-model"
    stack.llm.set_script(model, [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"content": "The answer is {last_tool_result}."}])
    calc_agent(kube, model)
    kube.apply([task("question", "mathematician", "What is 6 times 7?")])

    run = kube.wait_phase("question-run", "Completed")
    status = run["status"]
    assert status["output"] == "The answer is 42."
    assert [m["role"] for m in status["contextWindow"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert status["contextWindow"][2]["tool_calls"][0]["function"] == {"name": "calculator",
                                                                      "arguments": '{"expression": "6*7"}'}
    assert status["contextWindow"][3] == {"role": "tool", "content": "42",
                                          "tool_call_id": status["contextWindow"][2]["tool_calls"][0]["id"]}
    [call] = status["toolCallHistory"]
    assert (call["tool"], call["result"], call["step"]) == ("calculator", "42", 1) and "error" not in call
    assert status["step"] == 2 and status["agent"] == "mathematician"
    assert [(t["phase"], t["reason"]) for t in status["phaseHistory"]] == [
        ("Running", "Scheduled"), ("Completed", "FinalAnswer")]

    requests = [r for r in stack.llm.requests() if r["model"] == model]
    assert [r["status"] for r in requests] == [200, 200]
    assert sorted(requests[0]["tools"]) == ["calculator", "now"]
    prompt, completion = expected_usage(requests, ['{"expression": "6*7"}', "The answer is 42."])
    assert status["usage"] == {"promptTokens": prompt, "completionTokens": completion,
                               "totalTokens": prompt + completion, "cachedPromptTokens": 0}
    assert status["treeUsage"] == status["usage"] and "cost" not in status  # no delegation; the LLM has no pricing

    # Owned by its Task, linked in the Task's status, and every transition has an Event.
    assert run["metadata"]["ownerReferences"][0]["kind"] == "Task"
    assert kube.get("task", "question")["status"]["taskRunName"] == "question-run"
    reasons = [e["reason"] for e in kube.events("question-run")]
    assert "ActorStarted" in reasons and "FinalAnswer" in reasons

    # The API key is used (the server demands it) but never shows in status or events.
    everything = kube.run("get", "taskrun,task,agent,llm,events", "-o", "json").stdout
    assert LLM_KEY not in everything

    # One named actor for this TaskRun in the Ray namespace `kubechain`, which ended itself.
    actor_name = status["actor"]["name"]
    assert actor_name == f"{kube.namespace}/question-run/{run['metadata']['uid'][:8]}"
    actors = [a for a in dashboard_actors(stack) if a.get("name") == actor_name]
    assert len(actors) == 1 and actors[0]["ray_namespace"] == "kubechain"
    assert actors[0]["actor_id"] == status["actor"]["id"]
    deadline = time.monotonic() + 15
    while actors[0]["state"] != "DEAD" and time.monotonic() < deadline:
        time.sleep(0.3)
        actors = [a for a in dashboard_actors(stack) if a.get("name") == actor_name]
    assert actors[0]["state"] == "DEAD", actors[0]
    assert (status["epoch"], status["actor"]["restarts"]) == (1, 0)


def test_unknown_tool_and_malformed_arguments_go_back_to_the_llm(kube, stack):
    model = f"{kube.namespace}-model"
    stack.llm.set_script(model, [
        {"tool_calls": [{"name": "teleport", "arguments": {"to": "mars"}},
                        {"name": "calculator", "arguments": '{"expression": "1+'}]},
        {"content": "I could not compute it."}])
    calc_agent(kube, model)
    kube.apply([task("broken", "mathematician", "What is 1+1?")])

    status = kube.wait_phase("broken-run", "Completed")["status"]
    errors = [c.get("error", "") for c in status["toolCallHistory"]]
    assert "unknown tool 'teleport'" in errors[0]
    assert "not valid JSON" in errors[1]
    tool_messages = [m["content"] for m in status["contextWindow"] if m["role"] == "tool"]
    assert all(m.startswith("Error: ") for m in tool_messages) and len(tool_messages) == 2
    second_request = [r for r in stack.llm.requests() if r["model"] == model][1]
    calc_call = status["toolCallHistory"][1]["id"]  # tool messages come in the order the calls finished
    sent = {m.get("tool_call_id"): m["content"] for m in second_request["messages"] if m["role"] == "tool"}
    assert sent[calc_call].startswith("Error: arguments are not valid JSON")


def test_llm_errors_fail_the_run_with_a_clear_error(kube, stack):
    model = f"{kube.namespace}-model"
    stack.llm.set_script(model, [{"content": "never", "error": {"status": 500, "times": 10}}])
    calc_agent(kube, model)
    # no retries (LLM.spec.retry: the first failure fails the run); riding outages out: test_llm_faults.py
    kube.run("patch", "llm", "model", "--type", "merge", "-p", '{"spec": {"retry": {"maxElapsedSeconds": 0}}}')
    kube.apply([task("doomed", "mathematician", "Anything")])

    status = kube.wait_phase("doomed-run", "Failed")["status"]
    assert status["error"].startswith("InternalServerError")
    assert status["phaseHistory"][-1]["reason"] == "LLMError"
    assert any(e["reason"] == "LLMError" and e["type"] == "Warning" for e in kube.events("doomed-run"))


def test_deleting_a_task_garbage_collects_its_run(kube, stack):
    stack.llm.set_script(f"{kube.namespace}-model", [{"content": "done"}])
    calc_agent(kube, f"{kube.namespace}-model")
    kube.apply([task("short", "mathematician", "hi")])
    kube.wait_phase("short-run", "Completed")
    kube.run("delete", "task", "short")
    kube.wait_for("taskruns", "", lambda o: not o["items"], timeout=60, what="garbage-collected")


def test_launch_immediately_false_waits(kube, stack):
    stack.llm.set_script(f"{kube.namespace}-model", [{"content": "done"}])
    calc_agent(kube, f"{kube.namespace}-model")
    kube.apply([task("later", "mathematician", "hi", launchImmediately=False)])
    kube.wait_for("task", "later", lambda o: "launchImmediately" in (o.get("status") or {}).get("message", ""))
    assert kube.run("get", "taskruns", "-o", "name").stdout.strip() == ""
    kube.run("patch", "task", "later", "--type=merge", "-p", '{"spec": {"launchImmediately": true}}')
    kube.wait_phase("later-run", "Completed")
