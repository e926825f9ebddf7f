"""Tenants and code tools, on the real apiserver with RBAC: a tenant (a ServiceAccount with every right on the
kubechain kinds in its own namespace, nothing else) cannot run code on the Ray workers or in the operator unless the
cluster admin opted its namespace in, cannot opt itself in, and still meets the admin's allowlists when it is in.
What was admitted before the admin withdrew a namespace is refused where it would run. A tenant cannot borrow a
Secret or ServiceAccount it could not use itself (every field that names one), whether the Secret exists or not;
one it may read works. And the console refuses a burst of bad sign-ins with 429.

The stack's operator allows what the other suites need (conftest.CODE_TOOL_SETTINGS); docs/threat-model.md says why.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from .conftest import CODE_TOOLS_LABEL, Kube, agent, allow_code_tools, llm, secret, task, toolset

pytestmark = pytest.mark.integration

TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
OPT_IN_HINT = "Namespace label kubechain.dev/code-tools=allowed or the operator's KUBECHAIN_CODE_TOOLS_NAMESPACES"
# The exploit found on main: an allowlisted Python server, and two variables that make Python run a shell command.
INJECTION = [{"name": "PYTHONWARNINGS", "value": "all:0:antigravity.x:0:0"},
             {"name": "BROWSER", "value": "/bin/sh -c 'touch /tmp/kubechain-pwned' #%s"}]


def tenant(kube: Kube) -> str:
    """A tenant of `kube`'s namespace: every verb on the kubechain kinds there, nothing else. Returns the kubectl
    flag that acts as it (the admin impersonates it: the webhook sees the tenant's own request)."""
    kube.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tenant"},
                 "rules": [{"apiGroups": ["kubechain.dev"], "resources": ["*"], "verbs": ["*"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tenant"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
                 "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": kube.namespace}]}])
    return f"--as=system:serviceaccount:{kube.namespace}:tenant"


def stdio_toolset(name: str, command: str = TIME_SERVER, env: list[dict] = (), **extra) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": name},
            "spec": {"mcpServers": [{"name": "time", "stdio": {"command": command, "env": list(env)}, **extra}]}}


def ray_tool(name: str, function: str, **options) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Tool", "metadata": {"name": name},
            "spec": {"description": "runs on Ray", "execution": {"ray": {"function": function, **options}}}}


def refusal(kube: Kube, as_tenant: str, manifest: dict) -> str:
    """The webhook's message when the tenant applies `manifest` (it must be refused)."""
    result = kube.run(as_tenant, "apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0 and "denied the request" in result.stderr, result.stdout + result.stderr
    return result.stderr


def test_code_tools_are_refused_in_a_namespace_the_admin_did_not_opt_in(kube, stack):
    as_tenant, ns = tenant(kube), kube.namespace
    stderr = refusal(kube, as_tenant, stdio_toolset("clock"))
    assert f"MCP server 'time': stdio MCP servers are not allowed in namespace '{ns}'" in stderr
    assert OPT_IN_HINT in stderr
    stderr = refusal(kube, as_tenant, ray_tool("sh", "subprocess:getoutput"))
    assert f"ray tools are not allowed in namespace '{ns}'" in stderr and OPT_IN_HINT in stderr
    inline = toolset("kit", inline=[{"name": "sh", "description": "d",
                                     "execution": {"ray": {"function": "kubechain.demo.raytools:fail"}}}])
    assert f"tool 'sh': ray tools are not allowed in namespace '{ns}'" in refusal(kube, as_tenant, inline)
    # The tenant cannot opt itself in: Namespaces are cluster-scoped, its Role is namespaced.
    label = kube.run(as_tenant, "label", "namespace", ns, CODE_TOOLS_LABEL, check=False)
    assert label.returncode != 0 and "forbidden" in label.stderr.lower()
    assert kube.run("get", "toolsets,tools", "-o", "name").stdout.strip() == ""
    # Everything else is the tenant's to create as before.
    assert kube.run(as_tenant, "apply", "-f", "-", input=yaml.safe_dump(toolset("plain", inline=[
        {"name": "echo", "description": "d", "execution": {"builtin": {"name": "echo"}}}])), check=False).returncode == 0


def test_in_an_opted_in_namespace_the_admins_allowlists_still_hold(kube, stack):
    allow_code_tools(kube)
    as_tenant = tenant(kube)
    assert ("ray function 'subprocess:getoutput' is not allowed: the operator's KUBECHAIN_RAY_FUNCTIONS lists "
            "kubechain.demo.raytools:*") in refusal(kube, as_tenant, ray_tool("sh", "subprocess:getoutput"))
    # `module:*` allows the module's own functions, never a dotted path into what it imported.
    assert "ray function 'kubechain.demo.raytools:os.system' is not allowed" in refusal(
        kube, as_tenant, ray_tool("sys", "kubechain.demo.raytools:os.system"))
    code_env = ray_tool("pip", "kubechain.demo.raytools:fail", runtimeEnv={"pip": ["requests"]})
    assert ("runtimeEnv pip not allowed: the operator's KUBECHAIN_RAY_RUNTIME_ENV_KEYS lists env_vars"
            in refusal(kube, as_tenant, code_env))
    assert ("MCP server 'time': command '/bin/sh' is not allowed for stdio MCP servers: the operator's "
            "KUBECHAIN_MCP_STDIO_COMMANDS lists") in refusal(kube, as_tenant, stdio_toolset("sh", "/bin/sh"))
    # The env injection through an allowlisted server: refused even though PYTHONWARNINGS came first.
    assert ("MCP server 'time': environment variable 'PYTHONWARNINGS' is never allowed for code tools"
            in refusal(kube, as_tenant, stdio_toolset("clock", env=INJECTION)))
    assert "environment variable 'BROWSER' is never allowed" in refusal(kube, as_tenant,
                                                                       stdio_toolset("clock", env=INJECTION[1:]))
    assert ("environment variable 'HOME' is not allowed for code tools: the operator's KUBECHAIN_CODE_TOOLS_ENV "
            "lists DEMO_TOKEN, PLAIN, KUBECHAIN_TOOL_*") in refusal(
        kube, as_tenant, stdio_toolset("clock", env=[{"name": "HOME", "value": "/tmp"}]))
    # What the lists allow is admitted, and the stdio server is discovered on Ray.
    kube.run(as_tenant, "apply", "-f", "-", input=yaml.safe_dump_all([
        ray_tool("fine", "kubechain.demo.raytools:describe_task", runtimeEnv={"env_vars": {"KUBECHAIN_TOOL_X": "1"}}),
        stdio_toolset("clock", env=[{"name": "PLAIN", "value": "1"}])]))
    found = kube.wait_ready("toolset", "clock", timeout=180)
    assert "time__get_current_time" in found["status"]["tools"]


def test_code_tools_admitted_before_the_admin_withdrew_the_namespace_are_refused_where_they_run(kube, stack):
    allow_code_tools(kube)
    model = f"{kube.namespace}-m"
    stack.llm.set_script(model, [{"tool_calls": [{"name": "embed", "arguments": {"text": "a"}}]},
                                 {"content": "got: {last_tool_result}"}])
    embed = {"name": "embed", "description": "runs on Ray", "execution": {"ray": {
        "function": "kubechain.demo.raytools:describe_task", "numCpus": 0.1}}}
    kube.apply([secret(), llm("m", stack.llm.base_url, model), toolset("tools", inline=[embed]),
                agent("a", "m", ["tools"]), stdio_toolset("clock", refreshSeconds=10)])
    kube.wait_ready("agent", "a")
    kube.wait_ready("toolset", "clock", timeout=180)

    kube.run("label", "namespace", kube.namespace, "kubechain.dev/code-tools-")  # the admin withdraws it
    kube.apply([task("t", "a", "embed it")])
    run = kube.wait_phase("t-run", "Completed", timeout=180)
    [call] = run["status"]["toolCallHistory"]
    assert call["state"] == "Failed" and call["error"].startswith(
        f"ray tools are not allowed in namespace '{kube.namespace}'"), call
    assert OPT_IN_HINT in run["status"]["output"]
    # The next discovery of the stdio server is refused before it starts: the ToolSet is not ready, naming the rule.
    gone = kube.wait_for("toolset", "clock", lambda o: (o.get("status") or {}).get("ready") is False, timeout=180,
                         what="not ready once its namespace is withdrawn")
    assert gone["status"]["message"].startswith(
        f"MCP server 'time': stdio MCP servers are not allowed in namespace '{kube.namespace}'")


def refused_secret(kube: Kube, field: str, secret_name: str) -> str:
    return (f"{field}: user system:serviceaccount:{kube.namespace}:tenant may not get Secret {secret_name!r} in "
            f"namespace {kube.namespace!r}")


def from_secret(name: str, var: str) -> dict:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": name, "key": "k"}}}


def test_a_tenant_cannot_borrow_a_secret_it_may_not_read(kube, stack):
    as_tenant, ns = tenant(kube), kube.namespace
    kube.apply([secret("db-password", "k", "hunter2")])  # the admin's
    # The confused deputy: the tenant's own server, the admin's Secret.
    stderr = refusal(kube, as_tenant, llm("steal", "http://tenant.example/v1", "m", secret="db-password", key="k"))
    assert refused_secret(kube, "spec.apiKeySecretRef", "db-password") in stderr
    # A Secret that does not exist is refused the same way: the answer says nothing about which Secrets exist.
    missing = refusal(kube, as_tenant, llm("probe", "http://tenant.example/v1", "m", secret="no-such", key="k"))
    assert missing.replace("no-such", "db-password").replace("probe", "steal") == stderr
    assert kube.run("get", "llms", "-o", "name").stdout.strip() == ""  # nothing was created: no readiness to read
    header = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Tool", "metadata": {"name": "hook"}, "spec": {
        "description": "d", "execution": {"http": {"url": "http://tenant.example/", "headers": [
            {"name": "X-Plain", "value": "1"}, from_secret("db-password", "Authorization")]}}}}
    assert refused_secret(kube, "spec.execution.http.headers[1].valueFrom.secretKeyRef", "db-password") in refusal(
        kube, as_tenant, header)
    job = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Tool", "metadata": {"name": "job"}, "spec": {
        "description": "d", "execution": {"container": {"image": "busybox", "env": [from_secret("db-password", "P")]}}}}
    assert refused_secret(kube, "spec.execution.container.env[0].valueFrom.secretKeyRef", "db-password") in refusal(
        kube, as_tenant, job)
    remote = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": "remote"}, "spec": {
        "mcpServers": [{"name": "far", "http": {"url": "http://tenant.example/mcp",
                                                "headers": [from_secret("db-password", "Authorization")]}}]}}
    assert refused_secret(kube, "spec.mcpServers[0].http.headers[0].valueFrom.secretKeyRef", "db-password") in refusal(
        kube, as_tenant, remote)
    allow_code_tools(kube)  # a stdio server's env: past the code-tool rules, still refused for the Secret
    stderr = refusal(kube, as_tenant, stdio_toolset("clock", env=[from_secret("db-password", "DEMO_TOKEN")]))
    assert refused_secret(kube, "spec.mcpServers[0].stdio.env[0].valueFrom.secretKeyRef", "db-password") in stderr
    # A container tool may not run as a ServiceAccount the tenant could not run pods as itself.
    kube.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer"}}])
    job["spec"]["execution"]["container"] = {"image": "busybox", "serviceAccountName": "deployer"}
    assert (f"spec.execution.container.serviceAccountName: user system:serviceaccount:{ns}:tenant may not run pods "
            f"as ServiceAccount 'deployer' in namespace '{ns}'") in refusal(kube, as_tenant, job)
    # The admin (who may read it) may; the tenant may not then point the admin's LLM elsewhere.
    kube.apply([llm("shared", stack.llm.base_url, "m", secret="db-password", key="k")])
    result = kube.run(as_tenant, "patch", "llm.v1alpha1.kubechain.dev", "shared", "--type=merge", "-p",
                      '{"spec":{"baseURL":"http://tenant.example/v1"}}', check=False)
    assert result.returncode != 0 and refused_secret(kube, "spec.apiKeySecretRef", "db-password") in result.stderr
    assert kube.run(as_tenant, "label", "llm", "shared", "team=b", check=False).returncode == 0  # not the spec


def test_a_tenant_may_use_a_secret_it_may_read_and_its_run_completes(kube, stack):
    as_tenant, ns = tenant(kube), kube.namespace
    model = f"{ns}-m"
    stack.llm.set_script(model, [{"content": "hello from the tenant's own key"}])
    kube.apply([secret(), {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "key"},
                           "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["llm-key"],
                                      "verbs": ["get"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "key"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "key"},
                 "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]}])
    kube.run(as_tenant, "apply", "-f", "-", input=yaml.safe_dump_all([llm("m", stack.llm.base_url, model),
                                                                      agent("a", "m"), task("t", "a", "hi")]))
    run = kube.wait_phase("t-run", "Completed", timeout=120)
    assert run["status"]["output"] == "hello from the tenant's own key"


def sign_in(url: str, token: str) -> tuple[int, dict, str | None]:
    request = urllib.request.Request(f"{url}/api/login", data=json.dumps({"token": token}).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-Kubechain-UI": "1"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("Retry-After")


def test_the_console_refuses_a_burst_of_bad_sign_ins_with_429(stack, tmp_path):
    from .test_ui import console

    # A refill so slow that none comes back during the test: the counts do not depend on how fast it runs.
    with console(stack, tmp_path, "--sign-in-burst", "3", "--sign-in-per-minute", "0.001") as url:
        answers = [sign_in(url, f"random-token-{i}") for i in range(6)]
    assert [status for status, _, _ in answers] == [401, 401, 401, 429, 429, 429]
    assert answers[0][1]["error"] == "the Kubernetes API does not accept this token"
    status, body, retry_after = answers[-1]
    assert body["error"].startswith("too many failed sign-in attempts from your address: try again in")
    assert int(retry_after) > 0


def test_the_stacks_operator_has_only_the_rights_of_its_rbac_file(kube, stack):
    """Every suite's operator runs as kubechain-system/kubechain-operator with kuberay/base/operator-rbac.yaml's
    rights (harness/localenv.py), not as the admin: what the suites do needs no more, and more is refused."""
    from harness.localenv import kubectl

    config = stack.operator_kubeconfig
    assert config != stack.kubeconfig
    kube.apply([secret()])
    assert kubectl(config, "-n", kube.namespace, "get", "secret", "llm-key", "-o", "name").stdout.strip()
    for forbidden in (["create", "configmap", "x"], ["delete", "secret", "llm-key"], ["get", "pod", "x"],
                      ["label", "namespace", kube.namespace, CODE_TOOLS_LABEL]):
        result = kubectl(config, "-n", kube.namespace, *forbidden, check=False)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (forbidden, result.stderr)
        assert "system:serviceaccount:kubechain-system:kubechain-operator" in result.stderr
