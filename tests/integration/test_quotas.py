"""RunQuota on the real stack: a cluster admin's quota of tokens per day for one namespace; once its runs spent it,
that namespace's new runs wait in Pending with a message naming the quota while another namespace's runs go on;
deleting a run frees nothing; a tenant cannot edit its quota; raising it lets the waiting run start."""
from __future__ import annotations

import json

import pytest

from harness.localenv import kubectl

from .conftest import Kube, agent, llm, secret, task
from .test_tenancy import tenant

pytestmark = pytest.mark.integration


def answering_agent(kube: Kube, stack) -> None:
    model = f"{kube.namespace}-m"
    stack.llm.set_script(model, [{"content": "the answer"}])
    kube.apply([secret(), llm("m", stack.llm.base_url, model), agent("a", "m")])
    kube.wait_ready("agent", "a")


def quota_status(stack, name: str) -> dict:
    return json.loads(kubectl(stack.kubeconfig, "get", "runquota", name, "-o", "json").stdout).get("status") or {}


def test_a_spent_quota_holds_its_namespaces_new_runs_and_no_other(kube, stack):
    other = Kube(stack, f"{kube.namespace[:50]}-b")
    kubectl(stack.kubeconfig, "create", "namespace", other.namespace)
    name = f"{kube.namespace[:50]}-daily"
    quota = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "RunQuota", "metadata": {"name": name},
             "spec": {"namespace": kube.namespace, "period": "Day", "maxTokens": 5}}
    kubectl(stack.kubeconfig, "apply", "-f", "-", input=json.dumps(quota))
    answering_agent(kube, stack)
    answering_agent(other, stack)
    # A tenant of the namespace cannot touch it: the kind is cluster-scoped, its Role namespaced.
    refused = kube.run(tenant(kube), "patch", "runquota", name, "--type=merge", "-p", '{"spec": {"maxTokens": 99}}',
                       check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()

    kube.apply([task("first", "a", "hi")])
    first = kube.wait_phase("first-run", "Completed", timeout=120)
    used = first["status"]["usage"]["totalTokens"]
    assert used > 5
    kube.wait_for("taskrun", "first-run", lambda _: quota_status(stack, name).get("exceeded") is True, timeout=30,
                  what="the quota spent")
    status = quota_status(stack, name)
    assert status["usedTokens"] == used and first["metadata"]["uid"] in status["counted"]

    kube.apply([task("second", "a", "hi again")])
    waiting = kube.wait_for("taskrun", "second-run", lambda o: f"RunQuota {name}: {used} of 5 tokens used this day"
                            in (o.get("status") or {}).get("message", ""), timeout=30, what="held by the quota")
    assert waiting["status"].get("phase", "Pending") == "Pending" and "wait until" in waiting["status"]["message"]
    other.apply([task("elsewhere", "a", "hi")])
    other.wait_phase("elsewhere-run", "Completed", timeout=120)  # another namespace is not held

    kube.run("delete", "task", "first")  # its run goes with it: what it spent stays counted
    kube.wait_for("taskrun", "", lambda o: all(i["metadata"]["name"] != "first-run" for i in o["items"]),
                  timeout=60, what="first-run deleted")
    assert quota_status(stack, name)["usedTokens"] == used
    assert kube.get("taskrun", "second-run")["status"].get("phase", "Pending") == "Pending"

    kubectl(stack.kubeconfig, "patch", "runquota", name, "--type=merge", "-p", '{"spec": {"maxTokens": 1000000}}')
    kube.wait_phase("second-run", "Completed", timeout=120)
