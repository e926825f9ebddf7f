"""The CRDs on the real apiserver: schema rejects bad input clearly, kubectl explain/get work."""
from __future__ import annotations

import json

import pytest

from .conftest import builtin_tool, llm, task

pytestmark = pytest.mark.integration


def rejected(kube, obj) -> str:
    """The apiserver's own answer (kubectl's client-side validation off)."""
    result = kube.run("apply", "--validate=false", "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, f"accepted: {obj}"
    return result.stderr


def test_schema_rejects_invalid_objects_with_clear_messages(kube, stack):
    two_ways = builtin_tool("t", "echo")
    two_ways["spec"]["execution"]["container"] = {"image": "busybox"}
    assert "must validate one and only one schema (oneOf)" in rejected(kube, two_ways)

    assert "spec.userInput: Required value" in rejected(kube, {**task("t", "a", "x"), "spec": {"agentRef": {"name": "a"}}})
    assert "spec.userInput" in rejected(kube, task("t", "a", ""))  # minLength 1
    hot = llm("l", stack.llm.base_url, "m", temperature=5)
    assert "spec.temperature" in rejected(kube, hot) and "less than or equal to 2" in rejected(kube, hot)
    assert 'spec.execution.builtin.name: Unsupported value: "rm"' in rejected(kube, builtin_tool("t", "rm"))
    assert "spec.baseURL" in rejected(kube, llm("l", "ftp://x", "m"))
    neither = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "r"},
               "spec": {"agentRef": {"name": "a"}}}
    assert "must validate one and only one schema (oneOf)" in rejected(kube, neither)
    assert "spec.maxTurns" in rejected(kube, {**task("t", "a", "x", maxTurns=0)})
    assert kube.run("get", "kubechain", "-o", "name").stdout.strip() == ""  # nothing slipped through


def test_kubectl_get_kubechain_and_explain(kube, stack):
    kube.apply([builtin_tool("calc", "calculator"), task("t", "nobody", "hello")])
    listed = kube.run("get", "kubechain", "-o", "name").stdout.split()
    assert {"tool.kubechain.dev/calc", "task.kubechain.dev/t", "taskrun.kubechain.dev/t-run"} <= set(listed)

    explained = kube.run("explain", "taskrun.status").stdout
    for field in ("contextWindow", "toolCallHistory", "phaseHistory", "usage", "actor", "output", "error"):
        assert field in explained
    assert "Delegating (waits for child runs), Completed or Failed" in " ".join(explained.split())
    assert "Secret key holding the API key" in kube.run("explain", "llm.spec.apiKeySecretRef",
                                                        "--api-version=kubechain.dev/v1alpha1").stdout
    assert "Secret key holding the API key" in kube.run("explain", "llm.spec.credentials.apiKeySecretRef").stdout

    wide = kube.run("get", "taskruns").stdout.splitlines()[0].split()
    assert wide == ["NAME", "AGENT", "PHASE", "PARENT", "STEP", "TOKENS", "COST", "AGE"]
    pending = kube.wait_for("taskrun", "t-run", lambda o: "Agent 'nobody'" in (o.get("status") or {}).get("message", ""))
    assert pending["status"]["message"] == "waiting for Agent 'nobody' to be ready: not found"
