"""RunQuota on the real stack: a cluster admin's quota for one namespace. Its maxRunning queues a second run behind
the first; once the first spent the day's tokens the second keeps waiting, naming the quota, and a new Task is
refused; another namespace's runs go on; deleting a run frees nothing; a tenant cannot edit its quota; raising it
lets the waiting run start."""
from __future__ import annotations

import json

import pytest

from harness.localenv import kubectl

from .conftest import Kube, agent, builtin_tool, llm, secret, task, toolset
from .test_tenancy import tenant

pytestmark = pytest.mark.integration


def answering_agent(kube: Kube, stack, slow: bool = False) -> None:
    """An agent that answers; `slow`: after an echo step, and 8 s later (the quota counts the first step meanwhile)."""
    model = f"{kube.namespace}-m"
    steps = [{"content": "the answer", "latency": 8 if slow else 0}]
    if slow:
        steps.insert(0, {"tool_calls": [{"name": "echo", "arguments": {"text": "x"}}]})
    stack.llm.set_script(model, steps)
    kube.apply([secret(), llm("m", stack.llm.base_url, model), builtin_tool("echo", "echo"),
                toolset("tools", ["echo"]), agent("a", "m", ["tools"])])
    kube.wait_ready("agent", "a")


def quota_status(stack, name: str) -> dict:
    return json.loads(kubectl(stack.kubeconfig, "get", "runquota", name, "-o", "json").stdout).get("status") or {}


def test_a_quota_queues_then_refuses_and_holds_only_its_namespace(kube, stack):
    other = Kube(stack, f"{kube.namespace[:50]}-b")
    kubectl(stack.kubeconfig, "create", "namespace", other.namespace)
    name = f"{kube.namespace[:50]}-daily"
    quota = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "RunQuota", "metadata": {"name": name},
             "spec": {"namespace": kube.namespace, "period": "Day", "maxTokens": 5, "maxRunning": 1}}
    kubectl(stack.kubeconfig, "apply", "-f", "-", input=json.dumps(quota))
    answering_agent(kube, stack, slow=True)
    answering_agent(other, stack)
    # A tenant of the namespace cannot touch it: the kind is cluster-scoped, its Role namespaced.
    refused = kube.run(tenant(kube), "patch", "runquota", name, "--type=merge", "-p", '{"spec": {"maxTokens": 99}}',
                       check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()

    # Queues: one run at a time (maxRunning), the second waits for the first, the quota named.
    kube.apply([task("first", "a", "hi")])
    kube.wait_phase("first-run", "Running", timeout=60)
    kube.apply([task("second", "a", "hi again")])
    kube.wait_for("taskrun", "second-run", lambda o: f"(RunQuota {name} maxRunning)"
                  in (o.get("status") or {}).get("message", ""), timeout=30, what="queued by maxRunning")
    # The first run's first step spends the day's tokens: the second keeps waiting once the first is done.
    first = kube.wait_phase("first-run", "Completed", timeout=120)
    used = first["status"]["usage"]["totalTokens"]
    waiting = kube.wait_for("taskrun", "second-run", lambda o: f"RunQuota {name}: {used} of 5 tokens used this day"
                            in (o.get("status") or {}).get("message", ""), timeout=30, what="held by the spent quota")
    assert waiting["status"].get("phase", "Pending") == "Pending" and "wait until" in waiting["status"]["message"]
    status = quota_status(stack, name)
    assert status["exceeded"] and status["usedTokens"] == used and first["metadata"]["uid"] in status["counted"]
    # Refuses: a new Task is refused at admission while the quota is spent, saying why.
    third = kube.apply([task("third", "a", "and again")], check=False)
    assert third.returncode != 0 and f"refused: RunQuota {name}: {used} of 5 tokens used" in third.stderr
    other.apply([task("elsewhere", "a", "hi")])
    other.wait_phase("elsewhere-run", "Completed", timeout=120)  # another namespace is not held

    kube.run("delete", "task", "first")  # its run goes with it: what it spent stays counted
    kube.wait_for("taskrun", "", lambda o: all(i["metadata"]["name"] != "first-run" for i in o["items"]),
                  timeout=60, what="first-run deleted")
    assert quota_status(stack, name)["usedTokens"] == used
    assert kube.get("taskrun", "second-run")["status"].get("phase", "Pending") == "Pending"

    kubectl(stack.kubeconfig, "patch", "runquota", name, "--type=merge", "-p", '{"spec": {"maxTokens": 1000000}}')
    kube.wait_phase("second-run", "Completed", timeout=120)
