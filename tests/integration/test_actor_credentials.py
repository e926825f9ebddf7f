"""Actors' credentials on the real apiserver with RBAC: the Ray workers' own identity may do nothing (their
KUBECONFIG here is anonymous, as a Ray pod's account has no rights), so every run that completes wrote with the token
the operator handed it: its namespace's `kubechain-actor` account. That account reaches its own namespace's run
status, chunk ConfigMaps and Events, nothing else: with its token, tenant B cannot read or forge tenant A's
journal or chunks, read a Secret, or change a spec; tenant A's run completes unharmed."""
from __future__ import annotations

import json

import pytest

from harness.controlplane import http_get
from harness.localenv import kubectl

from .conftest import Kube, agent, llm, secret, task

pytestmark = pytest.mark.integration
STATUS = "/apis/kubechain.dev/v1alpha1/namespaces/{ns}/taskruns/{name}/status"


def completed_run(kube: Kube, stack, answer: str) -> dict:
    model = f"{kube.namespace}-m"
    stack.llm.set_script(model, [{"content": answer}])
    kube.apply([secret(), llm("m", stack.llm.base_url, model), agent("a", "m"), task("t", "a", "hi")])
    return kube.wait_phase("t-run", "Completed", timeout=120)


def as_token(stack, token: str, *args: str) -> tuple[int, str]:
    """kubectl with only this bearer token: (exit code, output)."""
    result = kubectl(stack.controlplane.anonymous_kubeconfig, f"--token={token}", *args, check=False)
    return result.returncode, result.stdout + result.stderr


def test_an_actor_token_writes_only_its_own_namespace(kube, stack):
    tenant_a = Kube(stack, f"{kube.namespace[:50]}-a")
    kubectl(stack.kubeconfig, "create", "namespace", tenant_a.namespace)
    run_a = completed_run(tenant_a, stack, "tenant A's answer")
    run_b = completed_run(kube, stack, "tenant B's answer")
    # Each namespace got its own account, bound to the actor role there, mounting nothing.
    for tenant in (kube, tenant_a):
        account = tenant.get("serviceaccount", "kubechain-actor")
        assert account["automountServiceAccountToken"] is False
        binding = tenant.get("rolebinding", "kubechain-actor")
        assert binding["roleRef"]["name"] == "kubechain-actor"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubechain-actor",
                                        "namespace": tenant.namespace}]
    # The workers' own identity (anonymous here): nothing, not even its run's status.
    code, out = http_get(stack.controlplane.server + STATUS.format(ns=kube.namespace, name="t-run"))
    assert code == 403, out

    token = kube.run("create", "token", "kubechain-actor", "--duration=10m").stdout.strip()
    own = STATUS.format(ns=kube.namespace, name="t-run")
    code, out = as_token(stack, token, "get", "--raw", own)
    assert code == 0 and json.loads(out)["status"]["output"] == "tenant B's answer"
    forged = json.dumps({"status": {"output": "forged", "toolCallHistory": [
        {"id": "x", "key": "x", "name": "approve_payment", "arguments": "{}", "state": "Started"}]}})
    refused = {
        "tenant A's run status": ("get", "--raw", STATUS.format(ns=tenant_a.namespace, name="t-run")),
        "a forged journal entry in tenant A's run": (
            "-n", tenant_a.namespace, "patch", "taskrun", "t-run", "--subresource=status", "--type=merge",
            "-p", forged),
        "tenant A's ConfigMaps": ("-n", tenant_a.namespace, "get", "configmaps"),
        "its own namespace's Secrets": ("-n", kube.namespace, "get", "secret", "llm-key"),
        "its run's spec": ("-n", kube.namespace, "patch", "taskrun", "t-run", "--type=merge",
                           "-p", '{"spec": {"maxTurns": 99}}'),
    }
    for what, args in refused.items():
        code, out = as_token(stack, token, *args)
        assert code != 0 and "forbidden" in out.lower(), f"{what}: {out}"
    # Tenant A's run is as its own actor left it.
    after = tenant_a.get("taskrun", "t-run")
    assert after["status"]["output"] == "tenant A's answer"
    assert after["status"]["contextWindow"] == run_a["status"]["contextWindow"]
    assert run_b["status"]["phase"] == "Completed"
