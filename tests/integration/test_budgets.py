"""Cost and budgets across a delegation tree, on the real stack: the root's tree totals equal the LLM server's own
count of tokens over the five runs (and their priced cost), `kubectl get taskruns` shows them; a budget stops a
tree before the request that would pass it, the children drawing equal shares of what their parent had left."""
from __future__ import annotations

import json

import pytest

from .conftest import Kube, agent, llm, secret, task, toolset
from .test_delegation import delegate

pytestmark = pytest.mark.integration
PRICING = {"currency": "EUR", "inputPerMillionTokens": 2.0, "outputPerMillionTokens": 8.0}


def priced_team(kube: Kube, stack) -> dict[str, str]:
    """boss -> 2 x researcher (parallel) -> fact each, every LLM priced."""
    models = {role: f"{kube.namespace}-{role}" for role in ("boss", "researcher", "fact")}
    stack.llm.set_script(models["boss"], [
        {"tool_calls": [{"name": "research", "arguments": {"message": "topic A"}},
                        {"name": "research", "arguments": {"message": "topic B"}}]},
        {"content": "summary: {last_tool_result}"}])
    stack.llm.set_script(models["researcher"], [
        {"tool_calls": [{"name": "facts", "arguments": {"message": "the number"}}]},
        {"content": "research: {last_tool_result}"}])
    stack.llm.set_script(models["fact"], [{"content": "42 " * 40}])
    kube.apply([secret(), *[llm(role, stack.llm.base_url, model, pricing=PRICING) for role, model in models.items()],
                toolset("boss-tools", inline=[delegate("research", "researcher")]),
                toolset("researcher-tools", inline=[delegate("facts", "fact")]),
                agent("boss", "boss", ["boss-tools"]), agent("researcher", "researcher", ["researcher-tools"]),
                agent("fact", "fact")])
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


def test_a_roots_tree_totals_are_what_the_provider_counted_for_the_whole_tree(kube, stack):
    models = priced_team(kube, stack)
    kube.apply([task("question", "boss", "Research A and B")])
    root = kube.wait_phase("question-run", "Completed", timeout=240)["status"]
    counted = served(stack, models)
    assert root["treeUsage"]["promptTokens"] == counted["prompt"]
    assert root["treeUsage"]["completionTokens"] == counted["completion"]
    assert root["treeCost"] == pytest.approx(cost(counted)) and root["currency"] == "EUR"
    assert root["usage"]["totalTokens"] < root["treeUsage"]["totalTokens"]  # its own is a part of it
    assert root["cost"] == pytest.approx(cost({"prompt": root["usage"]["promptTokens"],
                                              "completion": root["usage"]["completionTokens"]}))
    table = kube.run("get", "taskrun", "question-run").stdout
    assert "COST" in table.splitlines()[0] and str(root["treeUsage"]["totalTokens"]) in table


def test_a_budget_stops_the_tree_before_the_request_that_would_pass_it(kube, stack):
    models = priced_team(kube, stack)
    # Enough for the boss's first request and a little more: the researchers' shares run out on their second.
    kube.apply([task("question", "boss", "Research A and B", budget={"maxTokens": 160})])
    root = kube.wait_phase("question-run", "Failed", timeout=240)
    assert root["status"]["phaseHistory"][-1]["reason"] == "BudgetExceeded"
    assert "spec.budget.maxTokens" in root["status"]["error"]
    children = [r for r in json.loads(kube.run("get", "taskruns", "-o", "json").stdout)["items"]
                if (r["spec"].get("parent") or {}).get("name") == "question-run"]
    assert len(children) == 2
    left = 160 - root["status"]["usage"]["totalTokens"]
    assert [c["spec"]["budget"]["maxTokens"] for c in children] == [left // 2, left // 2]  # equal shares
    # Nothing asked past the budget: what the provider counted for the tree fits it, but for the last answers
    # (a request's completion is known only once it is made).
    counted = served(stack, models)
    assert root["status"]["treeUsage"]["totalTokens"] == counted["prompt"] + counted["completion"]
