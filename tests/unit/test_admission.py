"""Conversion v1alpha1 <-> v1alpha2 and the validating webhook's rules, as pure functions."""
import pytest

from kubechain.core import admission
from kubechain.api.conversion import ConversionError, convert
from kubechain.api.v1alpha1 import CallState, TaskRunStatus, ToolCallRecord, WaitingFor
from kubechain.operator.webhook_server import conversion_patch, review

V1 = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "LLM", "metadata": {"name": "m", "annotations": {"a": "b"}},
      "spec": {"provider": "openai", "model": "gpt", "baseURL": "http://x/v1", "temperature": 0.2, "maxTokens": 9,
               "apiKeySecretRef": {"name": "s", "key": "k"}, "requestTimeoutSeconds": 5, "maxRetries": 1},
      "status": {"ready": True}}


def test_llm_converts_losslessly_both_ways():
    v2 = convert(V1, "kubechain.dev/v1alpha2")
    assert v2["spec"] == {"provider": "openai", "model": "gpt",
                          "endpoint": {"baseURL": "http://x/v1", "requestTimeoutSeconds": 5, "maxRetries": 1},
                          "credentials": {"apiKeySecretRef": {"name": "s", "key": "k"}},
                          "parameters": {"temperature": 0.2, "maxTokens": 9}}
    assert v2["status"] == V1["status"] and v2["metadata"] == V1["metadata"]
    assert convert(v2, "kubechain.dev/v1alpha1") == V1
    minimal = {"apiVersion": "kubechain.dev/v1alpha2", "kind": "LLM", "spec": {"model": "m"}}
    assert convert(convert(minimal, "kubechain.dev/v1alpha1"), "kubechain.dev/v1alpha2") == minimal


def test_other_kinds_only_change_api_version_and_bad_versions_fail():
    task = {"apiVersion": "kubechain.dev/v1alpha2", "kind": "Task", "spec": {"agentRef": {"name": "a"}}}
    assert convert(task, "kubechain.dev/v1alpha1") == {**task, "apiVersion": "kubechain.dev/v1alpha1"}
    with pytest.raises(ConversionError):
        convert(task, "kubechain.dev/v9")
    failed = review({"request": {"uid": "u", "desiredAPIVersion": "other.dev/v1", "objects": [task]}})
    assert failed["response"]["result"]["status"] == "Failure" and failed["response"]["uid"] == "u"
    ok = review({"request": {"uid": "u", "desiredAPIVersion": "kubechain.dev/v1alpha2", "objects": [V1]}})
    assert ok["response"]["convertedObjects"][0]["spec"]["endpoint"]["baseURL"] == "http://x/v1"


def test_conversion_patch_points_at_the_server():
    patch = conversion_patch({"url": "https://127.0.0.1:9443/", "caBundle": "Q0E="})
    config = patch["spec"]["conversion"]["webhook"]["clientConfig"]
    assert config == {"url": "https://127.0.0.1:9443/convert", "service": None, "caBundle": "Q0E="}


class Catalog(dict):
    def get(self, kind, namespace, name):
        return super().get((kind, name))

    def names(self, kind, namespace):
        return [n for k, n in self if k == kind]


def delegate(name, to):
    return {"name": name, "description": "d", "execution": {"delegate": {"agentRef": {"name": to}}}}


def test_agent_rules_duplicate_tools_and_delegation_cycles():
    catalog = Catalog({("ToolSet", "a-tools"): {"spec": {"tools": [delegate("ask_b", "b")]}},
                       ("ToolSet", "b-tools"): {"spec": {"tools": [delegate("ask_a", "a")]}},
                       ("ToolSet", "dup"): {"spec": {"tools": [delegate("ask_b", "c")]}},
                       ("Agent", "b"): {"spec": {"llmRef": {"name": "l"}, "systemPrompt": "p",
                                                  "toolsetRefs": [{"name": "b-tools"}]}}})
    spec = {"llmRef": {"name": "l"}, "systemPrompt": "p", "toolsetRefs": [{"name": "a-tools"}]}
    assert admission.agent("ns", "a", spec, catalog) == ["delegate tools form a cycle: a -> b -> a"]
    assert admission.agent("ns", "c", spec, catalog) == []  # c -> b -> a: no way back to c
    both = {**spec, "toolsetRefs": [{"name": "a-tools"}, {"name": "dup"}]}
    assert "tool 'ask_b' is offered by more than one ToolSet: a-tools, dup" in admission.agent("ns", "c", both, catalog)


def test_tool_and_toolset_rules():
    assert admission.tool({"description": "d", "arguments": {"type": "array"},
                           "execution": {"builtin": {"name": "echo"}}}) == ["arguments must be a JSON Schema of type object"]
    twice = {"tools": [delegate("x", "a"), delegate("x", "b")]}
    assert admission.toolset(twice) == ["tool names must be unique within a ToolSet: x"]


def paused_run(responses=None):
    record = ToolCallRecord(id="c1", step=1, tool="ask", arguments="{}", state=CallState.WAITING,
                            waiting_for=WaitingFor.ANSWER)
    status = TaskRunStatus.model_validate({"phase": "PausedForUserInput"}).model_copy(
        update={"tool_call_history": [record]})
    return {"spec": {"taskRef": {"name": "t"}, "responses": responses or {}},
            "status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}


def test_taskrun_rules():
    old = paused_run()
    assert admission.taskrun(paused_run({"c1": {"answer": "yes"}}), old) == []
    assert admission.taskrun(paused_run({"zz": {"answer": "yes"}}), old) == ["zz: no such tool call in this run"]
    assert admission.taskrun(paused_run({"c1": {"approved": True}}), old) == ["c1: this call waits for an `answer`"]
    moved = {**paused_run(), "spec": {"taskRef": {"name": "other"}}}
    assert admission.taskrun(moved, old) == ["spec.taskRef cannot change"]
    answered = paused_run({"c1": {"answer": "yes"}})
    assert admission.taskrun(paused_run(), answered) == ["c1: a reply cannot be removed"]
    assert admission.taskrun({"spec": {"agentRef": {"name": "a"}}}) == ["spec: Value error, set either taskRef, or both agentRef and userInput, or forkOf"]
    cancelled = {**old, "spec": {**old["spec"], "cancel": True}}
    assert admission.taskrun(old, cancelled) == ["spec.cancel cannot be unset: a cancelled run stays cancelled"]


def test_task_agent_is_immutable_once_launched():
    old = {"spec": {"agentRef": {"name": "a"}}, "status": {"taskRunName": "t-run"}}
    assert admission.task_update(old, {"spec": {"agentRef": {"name": "b"}}}) != []
    assert admission.task_update({**old, "status": {}}, {"spec": {"agentRef": {"name": "b"}}}) == []


def test_in_a_cluster_the_apiserver_is_pointed_at_the_service():
    from kubechain.operator.webhook_server import service_config

    config = service_config({"url": "https://kubechain-webhooks.kubechain-system.svc:9443", "caBundle": "Q0E="},
                            "kubechain-system/kubechain-webhooks:443")
    assert config == {"service": {"namespace": "kubechain-system", "name": "kubechain-webhooks", "port": 443,
                                  "path": ""}, "caBundle": "Q0E="}
    stanza = conversion_patch(config)["spec"]["conversion"]["webhook"]["clientConfig"]
    assert stanza["service"]["path"] == "/convert" and stanza["url"] is None


def test_a_schedules_runs_keep_to_the_namespaces_highest_priority():
    from kubechain.core.admission import schedule

    spec = {"schedule": "@daily", "runTemplate": {"agentRef": {"name": "a"}, "userInput": "x", "priority": 50}}
    [problem] = schedule({"spec": spec}, None, "ns", 10, False)
    assert problem.startswith("spec.runTemplate.priority 50 is over the highest priority namespace 'ns' may use, 10")
    assert schedule({"spec": spec}, {"spec": spec}, "ns", 10, False) == []  # unchanged: admitted before the limit fell
    assert schedule({"spec": {**spec, "schedule": "daily"}}, None, "ns", 100, False)[0].startswith("schedule: ")
