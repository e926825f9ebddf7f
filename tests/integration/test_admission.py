"""Webhooks on the real apiserver: it calls the operator over TLS on loopback to validate, default and
convert (v1alpha1 <-> v1alpha2)."""
from __future__ import annotations

import base64
import json
import ssl
import urllib.request

import pytest

from .chaos import wait_until
from .conftest import agent, builtin_tool, llm, secret, task, toolset
from .test_delegation import delegate

pytestmark = pytest.mark.integration


def refused(kube, manifest) -> str:
    result = kube.apply([manifest], check=False)
    assert result.returncode != 0, f"admitted: {manifest}"
    return result.stderr


def patch_refused(kube, kind: str, name: str, patch: dict) -> str:
    result = kube.run("patch", kind, name, "--type", "merge", "-p", json.dumps(patch), check=False)
    assert result.returncode != 0, f"admitted: {patch}"
    return result.stderr


def test_bad_objects_are_refused_with_the_webhooks_message(kube, stack):
    bad_schema = builtin_tool("t", "echo")
    bad_schema["spec"]["arguments"] = {"type": "object", "properties": {"x": {"type": "nonsense"}}}
    assert 'admission webhook "validate-tools.kubechain.dev" denied the request' in refused(kube, bad_schema)
    assert "arguments is not a valid JSON Schema" in refused(kube, bad_schema)
    assert "tool names must be unique within a ToolSet: x" in refused(
        kube, toolset("twice", inline=[delegate("x", "a"), delegate("x", "b")]))

    kube.apply([toolset("a-tools", inline=[delegate("ask_b", "b")]), toolset("b-tools", inline=[delegate("ask_a", "a")]),
                agent("b", "m", ["b-tools"])])
    assert "delegate tools form a cycle: a -> b -> a" in refused(kube, agent("a", "m", ["a-tools"]))
    assert kube.run("get", "agent", "a", check=False).returncode != 0  # nothing was stored


def test_immutable_fields_and_replies_are_enforced(kube, stack):
    kube.apply([task("t", "nobody", "hello")])
    kube.wait_for("taskrun", "t-run", lambda o: bool(o.get("status")))
    assert "spec.taskRef cannot change" in patch_refused(kube, "taskrun", "t-run", {"spec": {"taskRef": {"name": "x"}}})
    assert "spec.agentRef cannot change once the Task launched" in patch_refused(
        kube, "task", "t", {"spec": {"agentRef": {"name": "other"}}})
    message = patch_refused(kube, "taskrun", "t-run", {"spec": {"responses": {"call_1": {"answer": "hi"}}}})
    assert "call_1: no such tool call in this run" in message
    kube.run("patch", "taskrun", "t-run", "--type", "merge", "-p", '{"spec":{"cancel":true}}')
    kube.wait_phase("t-run", "Failed")
    assert "cannot be unset" in patch_refused(kube, "taskrun", "t-run", {"spec": {"cancel": False}})


def test_defaults_are_written_into_objects(kube, stack):
    kube.apply([{"apiVersion": "kubechain.dev/v1alpha1", "kind": "LLM", "metadata": {"name": "bare"},
                 "spec": {"model": "m"}}])
    spec = kube.get("llms.v1alpha1.kubechain.dev", "bare")["spec"]
    assert (spec["provider"], spec["maxRetries"]) == ("openai", 0)
    assert "temperature" not in spec and "maxTokens" not in spec  # not sent unless set: models differ in what they take
    assert spec["retry"] == {"maxElapsedSeconds": 3600, "initialBackoffSeconds": 1.0, "maxBackoffSeconds": 120.0}
    preferred = kube.get("llm", "bare")  # kubectl's default is the newest version
    assert preferred["apiVersion"] == "kubechain.dev/v1alpha2" and preferred["spec"]["retry"] == spec["retry"]
    assert preferred["spec"]["endpoint"]["maxRetries"] == 0
    # The mutating webhook itself, called over TLS exactly as the apiserver calls it.
    configuration = json.loads(kube.run("get", "mutatingwebhookconfiguration", "kubechain.dev", "-o", "json").stdout)
    hook = next(w for w in configuration["webhooks"] if w["name"] == "default-llms.kubechain.dev")
    assert hook["failurePolicy"] == "Ignore"
    context = ssl.create_default_context(cadata=base64.b64decode(hook["clientConfig"]["caBundle"]).decode())
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "operation": "CREATE", "userInfo": {"username": "test"},
        "resource": {"group": "kubechain.dev", "version": "v1alpha1", "resource": "llms"},
        "object": {"apiVersion": "kubechain.dev/v1alpha1", "kind": "LLM",
                   "metadata": {"name": "x", "namespace": kube.namespace}, "spec": {"model": "m"}}}}
    request = urllib.request.Request(hook["clientConfig"]["url"], data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer = json.load(response)["response"]
    assert answer["allowed"] and answer["uid"] == "u1"
    ops = json.loads(base64.b64decode(answer["patch"]))
    added = {op["path"]: op.get("value") for op in ops}
    assert added["/spec/retry"] == {"maxElapsedSeconds": 3600, "initialBackoffSeconds": 1.0, "maxBackoffSeconds": 120.0}
    assert "/spec/temperature" not in added and "/spec/maxTokens" not in added  # sent only when set


def test_objects_read_back_in_either_version_and_v1alpha2_objects_work(kube, stack):
    kube.apply([secret(), llm("old", stack.llm.base_url, "m1", temperature=0.7)])
    as_v2 = json.loads(kube.run("get", "llms.v1alpha2.kubechain.dev", "old", "-o", "json").stdout)
    assert as_v2["apiVersion"] == "kubechain.dev/v1alpha2"
    assert as_v2["spec"]["endpoint"]["baseURL"] == stack.llm.base_url
    assert as_v2["spec"]["credentials"]["apiKeySecretRef"] == {"name": "llm-key", "key": "api-key"}
    assert as_v2["spec"]["parameters"]["temperature"] == 0.7 and "temperature" not in as_v2["spec"]

    model = f"{kube.namespace}-v2"
    stack.llm.set_script(model, [{"content": "hello from v1alpha2"}])
    kube.apply([{"apiVersion": "kubechain.dev/v1alpha2", "kind": "LLM", "metadata": {"name": "new"},
                 "spec": {"model": model, "endpoint": {"baseURL": stack.llm.base_url, "maxRetries": 0},
                          "credentials": {"apiKeySecretRef": {"name": "llm-key", "key": "api-key"}},
                          "parameters": {"temperature": 0.1}}}])
    as_v1 = kube.get("llms.v1alpha1.kubechain.dev", "new")
    assert (as_v1["spec"]["baseURL"], as_v1["spec"]["temperature"], as_v1["spec"]["maxRetries"]) == (
        stack.llm.base_url, 0.1, 0)
    # The operator (which speaks v1alpha1) runs an agent on it.
    kube.apply([agent("speaker", "new"), task("hi", "speaker", "hi")])
    # The first run of a session may wait for the operator's Ray Client connection (up to 90 s here).
    assert kube.wait_phase("hi-run", "Completed", timeout=150)["status"]["output"] == "hello from v1alpha2"
    # And the round trip through the apiserver is lossless.
    again = json.loads(kube.run("get", "llms.v1alpha2.kubechain.dev", "new", "-o", "json").stdout)
    assert again["spec"]["endpoint"] == {"baseURL": stack.llm.base_url, "maxRetries": 0, "requestTimeoutSeconds": 120}


def test_the_operator_keeps_working_across_a_webhook_server_restart(kube, stack):
    restarts = stack.operator.restarts
    stack.operator.kill()  # the webhook server goes with it
    bad = builtin_tool("t", "echo")
    bad["spec"]["arguments"] = {"type": "array"}
    # Fail closed: while no webhook answers, nothing unvalidated gets in.
    result = kube.apply([bad], check=False)
    assert result.returncode != 0
    stack.operator.wait_restarted(restarts + 1)
    wait_until(lambda: kube.apply([builtin_tool("calc", "calculator")], check=False).returncode == 0, timeout=30,
               what="the webhooks answering again")
    assert "arguments must be a JSON Schema of type object" in refused(kube, bad)
    model = f"{kube.namespace}-m"
    stack.llm.set_script(model, [{"content": "still here"}])
    kube.apply([secret(), llm("m", stack.llm.base_url, model), agent("a", "m"), task("after", "a", "x")])
    # timeout: the restarted operator's first run waits for its Ray Client connection (tens of s on 2 busy cores)
    assert kube.wait_phase("after-run", "Completed", timeout=180)["status"]["output"] == "still here"
