"""LLM, ToolSet and Agent readiness on the real apiserver: both ways, by events, not polling; an LLM's key and
model checked with the provider (the scripted server, over HTTP)."""
from __future__ import annotations

import json

import pytest

from harness.controlplane import free_ports
from kubechain.demo.llm_server import ScriptedLLMServer

from .chaos import wait_until
from .conftest import LLM_KEY, agent, builtin_tool, llm, secret, task, toolset

pytestmark = pytest.mark.integration


def test_llm_not_ready_without_its_secret_or_key(kube, stack):
    kube.apply([llm("model", stack.llm.base_url, "m", secret="missing")])
    status = kube.wait_ready("llm", "model", ready=False)["status"]
    assert status["message"] == "Secret 'missing' not found"
    assert status["conditions"][0]["type"] == "Ready" and status["conditions"][0]["reason"] == "SecretNotFound"
    assert any(e["type"] == "Warning" and e["reason"] == "SecretNotFound" for e in kube.events("model"))

    kube.apply([secret(name="missing", key="other")])
    kube.wait_for("llm", "model", lambda o: "has no key 'api-key'" in o["status"].get("message", ""), timeout=30)

    kube.apply([secret(name="missing")])  # the key appears: the Secret's event checks the LLM
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


def reason(obj: dict) -> str:
    return next((c["reason"] for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), "")


def test_a_wrong_key_is_refused_until_its_secret_is_fixed(kube, stack):
    model = f"{kube.namespace}-m"
    kube.apply([secret(value="sk-wrong-key"), llm("model", stack.llm.base_url, model)])
    refused = kube.wait_for("llm", "model", lambda o: reason(o) == "Unauthorized", what="Unauthorized")
    assert refused["status"]["ready"] is False
    assert refused["status"]["message"] == "the provider refused the API key: Incorrect API key provided."
    wait_until(lambda: any(e["reason"] == "Unauthorized" and e["type"] == "Warning" for e in kube.events("model")),
               timeout=30, what="a Warning Event")
    assert "sk-wrong-key" not in json.dumps(refused) + json.dumps(kube.events("model"))

    # Fixed: the Secret's event checks the LLM now (a verdict is checked again only after minutes:
    # KUBECHAIN_LLM_CHECK_SECONDS, default 300, is not set in the stack).
    kube.apply([secret()])
    verified = kube.wait_ready("llm", "model", timeout=30)["status"]
    assert verified["message"] == f"openai model '{model}' verified" and verified["conditions"][0]["reason"] == "Ready"


def test_an_unknown_model_is_not_found_and_its_agent_not_ready(kube, stack):
    model = f"{kube.namespace}-retired"
    stack.llm.set_unknown_models([model])
    try:
        kube.apply([secret(), llm("model", stack.llm.base_url, model), agent("plain", "model")])
        missing = kube.wait_for("llm", "model", lambda o: reason(o) == "ModelNotFound", what="ModelNotFound")
        assert missing["status"]["message"] == (f"model '{model}' not found: The model `{model}` does not exist or "
                                                "you do not have access to it.")
        status = kube.wait_ready("agent", "plain", ready=False)["status"]
        assert status["message"].startswith(f"LLM 'model' is not ready: model '{model}' not found")
        kube.run("patch", "llm.v1alpha1.kubechain.dev", "model", "--type", "merge",
                 "-p", json.dumps({"spec": {"model": f"{model}-v2"}}))  # a model it serves: the update checks it
        kube.wait_ready("agent", "plain")
    finally:
        stack.llm.set_unknown_models([])


def test_a_server_that_does_not_list_models_is_ready_unverified(kube, stack):
    with ScriptedLLMServer(api_key=LLM_KEY, lists_models=False) as bare:
        kube.apply([secret(), llm("model", bare.base_url, "m")])
        status = kube.wait_ready("llm", "model")["status"]
        kube.run("delete", "llm", "model")
    assert status["message"] == "openai model 'm' could not be verified (the server does not list its models)"


def test_an_unreachable_provider_holds_new_runs_until_it_answers(kube, stack):
    (port,) = free_ports(1)
    base_url, model = f"http://127.0.0.1:{port}/v1", f"{kube.namespace}-m"
    kube.apply([secret(), llm("model", base_url, model), agent("plain", "model")])
    down = kube.wait_for("llm", "model", lambda o: reason(o) == "Unreachable", what="Unreachable")["status"]
    assert down["ready"] is False and down["message"].startswith(f"no answer from {base_url}: Connection error.")
    kube.apply([task("t", "plain", "hello")])
    waiting = kube.wait_for("taskrun", "t-run", lambda o: "LLM 'model' is not ready: no answer from" in
                            (o.get("status") or {}).get("message", ""), what="waiting for its LLM")["status"]
    assert waiting.get("phase", "Pending") == "Pending" and "Agent 'plain'" in waiting["message"]

    # The provider comes up: no event tells the operator, its recheck timer finds out and the run starts.
    with ScriptedLLMServer(api_key=LLM_KEY, port=port) as provider:
        provider.set_script(model, [{"content": "back"}])
        assert kube.wait_ready("llm", "model", timeout=60)["status"]["message"] == f"openai model '{model}' verified"
        # The first run of a session may wait for the operator's Ray Client connection.
        assert kube.wait_phase("t-run", "Completed", timeout=180)["status"]["output"] == "back"
        kube.run("delete", "llm", "model")
