"""Delegation to child TaskRuns (each its own actor), on the real control plane, Ray head and LLM server."""
from __future__ import annotations

import json
import os
import signal

import pytest

from .chaos import actor_pid, actors, wait_until
from .conftest import agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration


def delegate(name: str, to: str) -> dict:
    return {"name": name, "description": f"ask the {to} agent", "execution": {"delegate": {"agentRef": {"name": to}}}}


BOSS = [{"tool_calls": [{"name": "research", "arguments": {"message": "topic A"}},
                         {"name": "research", "arguments": {"message": "topic B"}}]},
        {"content": "summary: {last_tool_result}"}]
RESEARCHER = [{"tool_calls": [{"name": "facts", "arguments": {"message": "the number"}}]},
              {"content": "research: {last_tool_result}"}]


def team(kube, stack, fact_latency: float = 0.0) -> dict[str, str]:
    """boss → 2 × researcher (in parallel, one LLM turn) → fact each: three levels of agents."""
    models = {role: f"{kube.namespace}-{role}" for role in ("boss", "researcher", "fact")}
    stack.llm.set_script(models["boss"], BOSS)
    stack.llm.set_script(models["researcher"], RESEARCHER)
    stack.llm.set_script(models["fact"], [{"content": "42", "latency": fact_latency}])
    kube.apply([secret(), *[llm(role, stack.llm.base_url, model) for role, model in models.items()],
                toolset("boss-tools", inline=[delegate("research", "researcher")]),
                toolset("researcher-tools", inline=[delegate("facts", "fact")]),
                agent("boss", "boss", ["boss-tools"]), agent("researcher", "researcher", ["researcher-tools"]),
                agent("fact", "fact")])
    for name in ("boss", "researcher", "fact"):
        kube.wait_ready("agent", name)
    return models


def runs(kube) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in json.loads(kube.run("get", "taskruns", "-o", "json").stdout)["items"]}


def alive(stack, prefix: str) -> list[str]:
    return [a["name"] for a in actors(stack) if a["state"] == "ALIVE" and a.get("name", "").startswith(prefix)]


def test_two_levels_of_parallel_delegation_complete_and_form_a_tree(kube, stack):
    team(kube, stack, fact_latency=1.5)
    kube.apply([task("question", "boss", "Research A and B")])

    # While its children work the parent holds no actor: it is checkpointed, Delegating.
    parent = kube.wait_phase("question-run", "Delegating", timeout=60)
    waiting = [r for r in parent["status"]["toolCallHistory"] if r["state"] == "Waiting"]
    assert [r["waitingFor"] for r in waiting] == ["ChildRun", "ChildRun"]
    wait_until(lambda: len(runs(kube)) == 5, timeout=60, what="5 runs: the root, 2 researchers, 2 fact runs")
    wait_until(lambda: not alive(stack, f"{kube.namespace}/question-run/"), timeout=10, what="the parent actor gone")

    final = kube.wait_phase("question-run", "Completed", timeout=180)  # 5 actor starts; Ray Client may be slow
    assert final["status"]["output"] == "summary: research: 42"
    tree = runs(kube)
    children = {n: r for n, r in tree.items() if (r["spec"].get("parent") or {}).get("name") == "question-run"}
    assert sorted(r["spec"]["userInput"] for r in children.values()) == ["topic A", "topic B"]
    for name, child in children.items():
        assert child["status"]["phase"] == "Completed" and child["status"]["output"] == "research: 42"
        assert child["metadata"]["ownerReferences"][0]["uid"] == final["metadata"]["uid"]
        assert child["metadata"]["labels"]["kubechain.dev/parent-uid"] == final["metadata"]["uid"]
        [grandchild] = [r for r in tree.values() if (r["spec"].get("parent") or {}).get("name") == name]
        assert grandchild["spec"]["parent"]["agents"] == ["boss", "researcher"]
        assert grandchild["status"]["output"] == "42"
    # The parent's journal names each child; each result came back as the tool's result.
    records = final["status"]["toolCallHistory"]
    assert sorted(r["childRun"] for r in records) == sorted(children)
    assert [r["result"] for r in records] == ["research: 42", "research: 42"]
    assert [t["reason"] for t in final["status"]["phaseHistory"]] == ["Scheduled", "Delegated", "ChildrenFinished",
                                                                     "FinalAnswer"]
    # `kubectl get taskruns` shows the tree.
    table = kube.run("get", "taskruns").stdout
    assert "PARENT" in table and all(line.split()[3] == "question-run" for line in table.splitlines()
                                     if line.split()[0] in children)
    assert kube.get("task", "question")["status"]["output"] == "summary: research: 42"


def test_a_killed_child_actor_is_restored_and_the_parent_completes(kube, stack):
    team(kube, stack, fact_latency=3)
    kube.apply([task("question", "boss", "Research A and B")])
    wait_until(lambda: len(runs(kube)) == 5, timeout=60, what="the fact runs")
    fact_runs = [n for n, r in runs(kube).items() if r["metadata"]["labels"].get("kubechain.dev/agent") == "fact"]
    victim = kube.wait_phase(fact_runs[0], "Running", timeout=30)
    os.kill(actor_pid(stack, victim["status"]["actor"]["name"]), signal.SIGKILL)  # mid LLM request

    final = kube.wait_phase("question-run", "Completed", timeout=90)
    assert final["status"]["output"] == "summary: research: 42"
    restored = kube.get("taskrun", fact_runs[0])
    assert restored["status"]["epoch"] == 2 and restored["status"]["output"] == "42"
    # Nothing ran twice: one run per delegate call, 5 in all.
    assert len(runs(kube)) == 5


def test_operator_killed_while_delegating_resumes_the_parent(kube, stack):
    team(kube, stack, fact_latency=3)
    kube.apply([task("question", "boss", "Research A and B")])
    kube.wait_phase("question-run", "Delegating", timeout=60)
    restarts = stack.operator.restarts
    stack.operator.kill()
    stack.operator.wait_restarted(restarts + 1)
    final = kube.wait_phase("question-run", "Completed", timeout=120)
    assert final["status"]["output"] == "summary: research: 42" and len(runs(kube)) == 5


def test_cycles_and_depth_fail_the_call_clearly(kube, stack):
    model = f"{kube.namespace}-loop"
    stack.llm.set_script(model, [{"tool_calls": [{"name": "self", "arguments": {"message": "again"}}]},
                                 {"content": "stopped: {last_tool_result}"}])
    # The validating webhook refuses a cycle when the Agent is admitted; a ToolSet changed afterwards can still
    # make one, and then the run refuses the call.
    kube.apply([secret(), llm("m", stack.llm.base_url, model), toolset("t"), agent("narcissus", "m", ["t"])])
    kube.apply([toolset("t", inline=[delegate("self", "narcissus")])])
    kube.wait_for("agent", "narcissus", lambda o: "self" in (o.get("status") or {}).get("tools", []))
    kube.apply([task("loop", "narcissus", "go")])
    final = kube.wait_phase("loop-run", "Completed", timeout=60)
    assert final["status"]["output"] == "stopped: Error: delegation cycle refused: narcissus -> narcissus"
    assert len(runs(kube)) == 1


def test_cancelling_a_parent_cancels_the_tree_and_stops_every_actor(kube, stack):
    team(kube, stack, fact_latency=60)
    kube.apply([task("question", "boss", "Research A and B")])
    wait_until(lambda: len(runs(kube)) == 5 and all(r.get("status", {}).get("phase") in ("Running", "Delegating")
                                                    for r in runs(kube).values()), timeout=60, what="the tree running")
    kube.run("patch", "taskrun", "question-run", "--type", "merge", "-p", '{"spec":{"cancel":true}}')
    for name in runs(kube):
        run = kube.wait_phase(name, "Failed", timeout=30)
        assert run["status"]["phaseHistory"][-1]["reason"] == "Cancelled"
    wait_until(lambda: not alive(stack, f"{kube.namespace}/"), timeout=20, what="every actor of the tree stopped")


def test_deleting_a_parent_deletes_the_tree_and_its_actors(kube, stack):
    team(kube, stack, fact_latency=60)
    kube.apply([task("question", "boss", "Research A and B")])
    wait_until(lambda: len(alive(stack, f"{kube.namespace}/")) == 2, timeout=60, what="the fact actors running")
    kube.run("delete", "taskrun", "question-run", "--wait=false")
    wait_until(lambda: not runs(kube), timeout=60, what="garbage collection of the tree")
    wait_until(lambda: not alive(stack, f"{kube.namespace}/"), timeout=20, what="every actor of the tree stopped")
