"""LLM, ToolSet and Agent readiness on the real apiserver: both ways, by events, not polling."""
from __future__ import annotations

import pytest

from .conftest import agent, builtin_tool, llm, secret, toolset

pytestmark = pytest.mark.integration


def test_llm_not_ready_without_its_secret_or_key(kube, stack):
    kube.apply([llm("model", stack.llm.base_url, "m", secret="missing")])
    status = kube.wait_ready("llm", "model", ready=False)["status"]
    assert status["message"] == "Secret 'missing' not found"
    assert status["conditions"][0]["type"] == "Ready" and status["conditions"][0]["reason"] == "SecretNotFound"
    assert any(e["type"] == "Warning" and e["reason"] == "SecretNotFound" for e in kube.events("model"))

    kube.apply([secret(name="missing", key="other")])
    kube.wait_for("llm", "model", lambda o: "has no key 'api-key'" in o["status"].get("message", ""), timeout=30)

    kube.apply([secret(name="missing")])  # the key appears: noticed by the LLM's recheck timer
    kube.wait_ready("llm", "model", ready=True, timeout=30)


def test_agent_readiness_follows_its_dependencies_both_ways(kube, stack):
    kube.apply([agent("helper", "model", ["kit"])])
    assert kube.wait_ready("agent", "helper", ready=False)["status"]["message"] == "LLM 'model' not found"

    kube.apply([secret(), llm("model", stack.llm.base_url, "m")])
    kube.wait_for("agent", "helper", lambda o: o["status"].get("message") == "ToolSet 'kit' not found")

    kube.apply([toolset("kit", refs=["adder"])])
    toolset_status = kube.wait_ready("toolset", "kit", ready=False)["status"]
    assert toolset_status["message"] == "Tool 'adder' not found"

    kube.apply([builtin_tool("adder", "calculator")])  # the missing tool appears: set and agent follow
    assert kube.wait_ready("toolset", "kit")["status"]["tools"] == ["adder"]
    assert kube.wait_ready("agent", "helper")["status"]["tools"] == ["adder"]

    # A dependency breaks: the LLM now points at a missing Secret, so the agent is not ready any more.
    kube.apply([llm("model", stack.llm.base_url, "m", secret="gone")])
    kube.wait_ready("llm", "model", ready=False)
    status = kube.wait_ready("agent", "helper", ready=False)["status"]
    assert status["message"] == "LLM 'model' is not ready: Secret 'gone' not found"
    assert status["conditions"][0]["status"] == "False"

    kube.run("delete", "llm", "model")
    kube.wait_for("agent", "helper", lambda o: o["status"].get("message") == "LLM 'model' not found")


def test_toolset_names_the_invalid_tool(kube, stack):
    """Refused at admission (readiness would say the same if the webhooks were off: tests/unit/test_resolve.py)."""
    bad = {"name": "broken", "description": "x", "arguments": {"type": "array"},
           "execution": {"builtin": {"name": "echo"}}}
    result = kube.apply([toolset("kit", inline=[bad])], check=False)
    assert result.returncode != 0
    assert "tool 'broken': arguments must be a JSON Schema of type object" in result.stderr
    dupes = toolset("twice", refs=["echo"], inline=[{"name": "echo", "description": "x",
                                                      "execution": {"builtin": {"name": "echo"}}}])
    result = kube.apply([builtin_tool("echo", "echo"), dupes], check=False)
    assert "tool names must be unique within a ToolSet: echo" in result.stderr
