"""Cost and budgets across a delegation tree, on the real stack: the root's tree totals equal the LLM server's own
count of tokens over the five runs (and their priced cost), `kubectl get taskruns` shows them; a budget stops a
tree before the request that would pass it, the children drawing equal shares of what their parent had left."""
from __future__ import annotations

import json

import pytest

from .chaos import EffectCounter, kill_actor, wait_until
from .conftest import Kube, agent, llm, secret, task, toolset
from .test_delegation import BOSS, RESEARCHER, delegate

pytestmark = pytest.mark.integration
PRICING = {"currency": "EUR", "inputPerMillionTokens": 2.0, "outputPerMillionTokens": 8.0}


def priced_team(kube: Kube, stack, effects: EffectCounter | None = None, rounds: int = 1) -> dict[str, str]:
    """boss -> 2 x researcher (parallel) -> fact each, every LLM priced. With `effects`, each fact run first calls
    an http tool there `rounds` times, one step each (a call a test can hold, to kill the actor in it)."""
    models = {role: f"{kube.namespace}-{role}" for role in ("boss", "researcher", "fact")}
    stack.llm.set_script(models["boss"], BOSS)
    stack.llm.set_script(models["researcher"], RESEARCHER)
    fact = [{"content": "42 " * 40}]
    if effects is not None:
        fact[:0] = [{"tool_calls": [{"name": "record", "arguments": {"fact": "42"}}]}] * rounds
    stack.llm.set_script(models["fact"], fact)
    record = {"name": "record", "description": "records a fact", "execution": {"http": {
        "url": effects.url if effects else "http://127.0.0.1:1/", "timeoutSeconds": 120}}}
    kube.apply([secret(), *[llm(role, stack.llm.base_url, model, pricing=PRICING) for role, model in models.items()],
                toolset("boss-tools", inline=[delegate("research", "researcher")]),
                toolset("researcher-tools", inline=[delegate("facts", "fact")]),
                toolset("fact-tools", inline=[record]),
                agent("boss", "boss", ["boss-tools"]), agent("researcher", "researcher", ["researcher-tools"]),
                agent("fact", "fact", ["fact-tools"] if effects else [])])
    for name in ("boss", "researcher", "fact"):
        kube.wait_ready("agent", name)
    return models


def served(stack, models: dict[str, str]) -> dict[str, int]:
    """The server's own count of tokens it answered for these models."""
    total = {"prompt": 0, "completion": 0}
    for entry in stack.llm.requests():
        if entry.get("model") in models.values() and entry.get("usage"):
            total["prompt"] += entry["usage"]["prompt_tokens"]
            total["completion"] += entry["usage"]["completion_tokens"]
    return total


def cost(tokens: dict[str, int]) -> float:
    return (tokens["prompt"] * PRICING["inputPerMillionTokens"]
            + tokens["completion"] * PRICING["outputPerMillionTokens"]) / 1_000_000


def test_a_roots_tree_totals_are_what_the_provider_counted_for_the_whole_tree_after_crashes(kube, stack):
    effects = EffectCounter()
    try:
        models = priced_team(kube, stack, effects)
        effects.hold(1)
        kube.apply([task("question", "boss", "Research A and B")])
        # Mid-tree: a fact run's actor is killed in its tool call, and the operator is killed while the tree works.
        wait_until(effects.held.is_set, timeout=120, what="a fact run's tool call in flight")
        holder = next(r for r in json.loads(kube.run("get", "taskruns", "-o", "json").stdout)["items"]
                      if effects.posts[0]["key"].startswith(r["metadata"]["uid"]))
        kill_actor(stack, holder["status"]["actor"]["name"])
        restarts = stack.operator.restarts
        stack.operator.kill()
        effects.release()
        stack.operator.wait_restarted(restarts + 1)
        root = kube.wait_phase("question-run", "Completed", timeout=300)["status"]
    finally:
        effects.close()
    restored = kube.get("taskrun", holder["metadata"]["name"])["status"]
    assert restored["epoch"] >= 2 and restored["toolCallHistory"][0]["state"] == "Interrupted"
    counted = served(stack, models)
    assert root["treeUsage"]["promptTokens"] == counted["prompt"]
    assert root["treeUsage"]["completionTokens"] == counted["completion"]
    assert root["treeCost"] == pytest.approx(cost(counted)) and root["currency"] == "EUR"
    assert root["usage"]["totalTokens"] < root["treeUsage"]["totalTokens"]  # its own is a part of it
    assert root["cost"] == pytest.approx(cost({"prompt": root["usage"]["promptTokens"],
                                              "completion": root["usage"]["completionTokens"]}))
    table = kube.run("get", "taskrun", "question-run").stdout
    assert "COST" in table.splitlines()[0] and str(root["treeUsage"]["totalTokens"]) in table


def test_a_budget_that_runs_out_in_a_grandchild_stops_the_tree_before_a_request_would_pass_it(kube, stack):
    effects = EffectCounter()
    try:
        models = priced_team(kube, stack, effects, rounds=12)  # each fact run would take 13 requests
        kube.apply([task("question", "boss", "Research A and B", budget={"maxTokens": 400})])
        root = kube.wait_phase("question-run", "Failed", timeout=300)
    finally:
        effects.close()
    assert root["status"]["phaseHistory"][-1]["reason"] == "BudgetExceeded"
    assert "spec.budget.maxTokens" in root["status"]["error"]
    everything = json.loads(kube.run("get", "taskruns", "-o", "json").stdout)["items"]
    by_name = {r["metadata"]["name"]: r for r in everything}
    children = [r for r in everything if (r["spec"].get("parent") or {}).get("name") == "question-run"]
    left = 400 - root["status"]["usage"]["totalTokens"]
    assert [c["spec"]["budget"]["maxTokens"] for c in children] == [left // 2, left // 2]  # equal shares
    grandchildren = [r for r in everything if (r["spec"].get("parent") or {}).get("name") in
                     {c["metadata"]["name"] for c in children}]
    assert len(grandchildren) == 2
    for fact in grandchildren:  # the budget ran out down there: each stopped before its last requests
        parent = by_name[fact["spec"]["parent"]["name"]]
        assert fact["spec"]["budget"]["maxTokens"] == parent["spec"]["budget"]["maxTokens"] - parent["status"][
            "usage"]["totalTokens"]
        assert fact["status"]["phaseHistory"][-1]["reason"] == "BudgetExceeded"
        assert fact["status"]["step"] < 13 and fact["status"]["treeUsage"]["totalTokens"] <= fact["spec"]["budget"][
            "maxTokens"]
    # Every request the provider answered is in the root's tree totals: nothing asked was left uncounted.
    counted = served(stack, models)
    assert root["status"]["treeUsage"]["totalTokens"] == counted["prompt"] + counted["completion"]
