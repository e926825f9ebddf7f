"""What can be tested of a KubeRay deployment without Docker: every rendered manifest against the real
apiserver (and KubeRay's CRD schema), the service accounts' RBAC with the actor's own code, and a Ray
cluster laid out like KubeRay's (head with num-cpus 0 + worker nodes) losing a node."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from actors.checkpoint import KubeCheckpointStore, KubeREST
from kubechain.api.runspec import KubeCredentials, TaskRunRef
from kubechain.api.v1alpha1 import TaskRunStatus
from kubechain.core.builders import actor_account, actor_binding
from harness.controlplane import own_session_members
from harness.localenv import LocalEnvironment, kubectl, served_here

from .chaos import actors, wait_until
from .conftest import Kube, agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[2]
KUBERAY_CRDS = REPO.parent / "shared" / "kuberay-crds"
OVERLAYS = ("kind", "production", "gcs-ft")


def for_apiserver_120(node):
    if isinstance(node, dict):
        return {k: for_apiserver_120(v) for k, v in node.items()
                if k not in ("x-kubernetes-validations", "x-kubernetes-list-map-keys", "x-kubernetes-list-type")
                and not (k == "default" and v == "")}
    if isinstance(node, list):
        return [for_apiserver_120(v) for v in node]
    return node


def render(kube, overlay: str) -> list[dict]:
    text = kubectl(kube.env.kubeconfig, "kustomize", str(REPO / "kuberay" / "overlays" / overlay)).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def kuberay_crds(stack):
    if not KUBERAY_CRDS.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY_CRDS}")
    for path in sorted(KUBERAY_CRDS.glob("ray.io_*.yaml")):
        # The local apiserver (1.20) predates CEL and reads `default: ""` as null: KubeRay's
        # x-kubernetes-validations rules, empty-string defaults and the list-map merge keys that need them
        # are dropped; the structural schema (types, enums, required fields, formats) is enforced as published.
        crd = for_apiserver_120(yaml.safe_load(path.read_text()))
        kubectl(stack.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(crd))
    kubectl(stack.kubeconfig, "wait", "--for=condition=Established", "crd/rayclusters.ray.io", "--timeout=60s")
    kubectl(stack.kubeconfig, "apply", "-f", str(REPO / "kuberay" / "base" / "namespace.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_accepted_by_the_apiserver(kube, stack, kuberay_crds, overlay):
    objects = render(kube, overlay)
    kinds = {o["kind"] for o in objects}
    assert {"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "ClusterRole",
            "ClusterRoleBinding", "RayCluster"} <= kinds
    extra = [*yaml.safe_load_all((REPO / "kuberay" / "otel" / "collector.yaml").read_text()),
             *yaml.safe_load_all((REPO / "kuberay" / "samples-llm.yaml").read_text())]
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    # The CRDs exist already, with the conversion webhook pointed at this test's operator: check them as a
    # whole-object update; everything else as kubectl apply would send it.
    result = kubectl(stack.kubeconfig, "replace", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(crds),
                     check=False)
    assert result.returncode == 0, result.stderr
    others = [served_here(o) for o in objects if o["kind"] != "CustomResourceDefinition"] + extra
    result = kubectl(stack.kubeconfig, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(others),
                     check=False)
    assert result.returncode == 0, result.stderr
    # No single point of failure: two replicas, rolled one at a time, a budget for drains, ready = answers webhooks.
    [operator] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kubechain-operator"]
    assert operator["spec"]["replicas"] >= 2
    assert operator["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    [container] = operator["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kubechain", "operator"]
    # The webhooks: their own Deployment and account, the Service in front of its pods only.
    [webhooks] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kubechain-webhooks"]
    assert webhooks["spec"]["replicas"] >= 2 and webhooks["spec"]["strategy"] == operator["spec"]["strategy"]
    [container] = webhooks["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "webhooks", "scheme": "HTTPS"}
    assert webhooks["spec"]["template"]["spec"]["serviceAccountName"] == "kubechain-webhooks"
    [service] = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "kubechain-webhooks"]
    assert service["spec"]["selector"] == webhooks["spec"]["selector"]["matchLabels"]
    budgets = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert budgets == {"kubechain-operator": {"minAvailable": 1, "selector": operator["spec"]["selector"]},
                       "kubechain-webhooks": {"minAvailable": 1, "selector": webhooks["spec"]["selector"]}}
    [raycluster] = [o for o in objects if o["kind"] == "RayCluster"]
    # No pod of ours gets the namespace's Services as KUBECHAIN_*_PORT variables (kubechain-ui's would read as a
    # setting: test_image.py found it): every pod template opts out of service links.
    templates = [o["spec"]["template"] for o in objects if o["kind"] == "Deployment"] + [
        raycluster["spec"]["headGroupSpec"]["template"], *(g["template"] for g in raycluster["spec"]["workerGroupSpecs"])]
    assert [t["spec"].get("enableServiceLinks") for t in templates] == [False] * len(templates)
    assert raycluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert raycluster["spec"]["authOptions"] == {"mode": "token", "secretName": "kubechain-ray-token"}
    # KubeRay's schema really is in force: a typo is refused.
    broken = json.loads(json.dumps(raycluster))
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    result = kubectl(stack.kubeconfig, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(broken), check=False)
    assert result.returncode != 0 and "maxReplicas" in result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_code_tools_are_opt_in_and_narrow_in_every_overlay(kube, stack, overlay):
    """The operator allows no namespace by itself (the admin labels the ones to opt in), no `*` anywhere, and only
    commands and callables that cannot run code of a tenant's choosing; the operator reads Namespaces' labels."""
    objects = render(kube, overlay)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    operator, webhooks = deployments["kubechain-operator"], deployments["kubechain-webhooks"]
    env = {e["name"]: e.get("value", "") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    checked = {e["name"]: e.get("value", "") for e in webhooks["spec"]["template"]["spec"]["containers"][0]["env"]}
    settings = [name for name in env if name.startswith(("KUBECHAIN_CODE_TOOLS", "KUBECHAIN_RAY_", "KUBECHAIN_MCP_"))]
    assert len(settings) == 5 and {k: checked.get(k) for k in settings} == {k: env[k] for k in settings}  # the same
    assert env["KUBECHAIN_CODE_TOOLS_NAMESPACES"] == "" and env["KUBECHAIN_CODE_TOOLS_ENV"] == ""
    assert env["KUBECHAIN_MCP_STDIO_COMMANDS"] == "mcp-server-time"
    assert env["KUBECHAIN_RAY_FUNCTIONS"] == "kubechain.demo.raytools:*"
    assert env["KUBECHAIN_RAY_RUNTIME_ENV_KEYS"] == ""
    [role] = [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "kubechain-operator"]
    assert any("namespaces" in r["resources"] and "get" in r["verbs"] for r in role["rules"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ray_pods_are_fenced_and_redis_has_a_password(kube, overlay):
    """Ray's ports only from Ray pods and the operator, no egress to the cloud metadata address; the gcs-ft Redis
    takes a password from one Secret, which the RayCluster hands the head, and accepts only the Ray pods."""
    objects = render(kube, overlay)
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    ray = policies["kubechain-ray"]
    assert ray["podSelector"] == {"matchLabels": {"ray.io/cluster": "kubechain-ray"}}
    assert ray["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"ray.io/cluster": "kubechain-ray"}}},
                                         {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "kubechain-operator"}}}]
    assert all("from" not in rule and [p["port"] for p in rule["ports"]] == [8080] for rule in ray["ingress"][1:])
    blocks = [peer["ipBlock"] for rule in ray["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]} in blocks
    assert [p["port"] for p in policies["kubechain-operator"]["ingress"][0]["ports"]] == [8080, 8081, 8091]
    assert [p["port"] for p in policies["kubechain-webhooks"]["ingress"][0]["ports"]] == [9443]
    if overlay != "gcs-ft":
        return
    [raycluster] = [o for o in objects if o["kind"] == "RayCluster"]
    ref = {"secretKeyRef": {"name": "kubechain-redis-password", "key": "password"}}
    assert raycluster["spec"]["gcsFaultToleranceOptions"]["redisPassword"] == {"valueFrom": ref}
    [redis] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kubechain-redis"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "REDIS_PASSWORD", "valueFrom": ref} in container["env"]
    assert "--requirepass" in container["args"] and "$(REDIS_PASSWORD)" in container["args"]
    assert redis["metadata"]["namespace"] == "kubechain-system"
    assert policies["kubechain-redis"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {
        "ray.io/cluster": "kubechain-ray"}}}], "ports": [{"port": 6379, "protocol": "TCP"}]}]



def test_the_operators_lease_is_in_the_leader_election_priority_level(kube, stack):
    """Its renewals never queue behind its own flood of status patches (kuberay/base/flowschema.yaml): the session's
    operator, which runs as deployed, renews through that FlowSchema."""
    [schema] = [o for o in render(kube, "kind") if o["kind"] == "FlowSchema"]
    assert schema["spec"]["priorityLevelConfiguration"] == {"name": "leader-election"}

    def dispatched() -> float:
        metrics = kubectl(stack.kubeconfig, "get", "--raw", "/metrics").stdout.splitlines()
        mine = [line for line in metrics if line.startswith("apiserver_flowcontrol_dispatched_requests_total{")
                and 'flow_schema="kubechain-leader-election"' in line]
        assert all('priority_level="leader-election"' in line for line in mine), mine
        return sum(float(line.rsplit(" ", 1)[1]) for line in mine)

    before = time.monotonic(), dispatched()
    while dispatched() <= before[1]:  # a renewal every KUBECHAIN_LEASE_RETRY_SECONDS (2)
        assert time.monotonic() - before[0] < 30, "no Lease request went through the FlowSchema"
        time.sleep(1)


def kubeconfig_server(kubeconfig: Path) -> tuple[str, str | None, bool]:
    """(server, CA PEM, TLS verification off) of a kubeconfig's cluster."""
    cluster = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]
    ca = Path(cluster["certificate-authority"]).read_text() if cluster.get("certificate-authority") else None
    return cluster["server"], ca, bool(cluster.get("insecure-skip-tls-verify"))


def can(stack, account: str, *args: str) -> bool:
    result = kubectl(stack.kubeconfig, "auth", "can-i", f"--as=system:serviceaccount:kubechain-system:{account}",
                     *args, check=False)
    return result.stdout.strip() == "yes"


def test_service_accounts_can_do_their_job_and_nothing_more(kube, stack, kuberay_crds):
    rbac = [o for o in render(kube, "kind")
            if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    kubectl(stack.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(rbac))
    ns = ["-n", kube.namespace]
    # The Ray workers run every namespace's actors and code tools: their own account may do nothing.
    assert not can(stack, "kubechain-ray", "patch", "taskruns.kubechain.dev", "--subresource=status", *ns)
    for verb, what in (("get", "configmaps"), ("create", "events"), ("get", "secrets")):
        assert not can(stack, "kubechain-ray", verb, what, *ns), f"the Ray workers may {verb} {what}"
    # A namespace's actor account, bound to the rendered kubechain-actor ClusterRole as the operator binds it.
    kube.apply([actor_account(kube.namespace), actor_binding(kube.namespace)])
    actor = f"--as=system:serviceaccount:{kube.namespace}:kubechain-actor"
    assert kubectl(stack.kubeconfig, "auth", "can-i", actor, "patch", "taskruns.kubechain.dev", "--subresource=status",
                   *ns, check=False).stdout.strip() == "yes"
    for verb, what in (("get", "secrets"), ("list", "secrets"), ("patch", "taskruns.kubechain.dev"),
                       ("create", "taskruns.kubechain.dev"), ("delete", "configmaps"), ("get", "llms.kubechain.dev")):
        assert kubectl(stack.kubeconfig, "auth", "can-i", actor, verb, what, *ns, check=False).stdout.strip() == "no", \
            f"the actor may {verb} {what}"
    assert kubectl(stack.kubeconfig, "auth", "can-i", actor, "patch", "taskruns.kubechain.dev", "--subresource=status",
                   "-n", "kube-system", check=False).stdout.strip() == "no"  # its own namespace only
    for verb, what in (("get", "secrets"), ("watch", "secrets"), ("create", "taskruns.kubechain.dev"),
                       ("watch", "agents.kubechain.dev"), ("create", "jobs.batch"),
                       ("list", "pods"), ("delete", "configmaps")):  # an ended run's chunks (retention)
        assert can(stack, "kubechain-operator", verb, what, *ns), f"the operator may not {verb} {what}"
    assert can(stack, "kubechain-operator", "get", "pods", "--subresource=log", *ns)  # a container tool's result
    for verb, what in (("patch", "secrets"), ("delete", "secrets"), ("create", "secrets"),
                       ("patch", "customresourcedefinitions/taskruns.kubechain.dev"), ("create", "pods"),
                       ("delete", "pods"), ("update", "llms.kubechain.dev"), ("create", "configmaps"),
                       ("get", "configmaps"), ("list", "configmaps"),
                       ("patch", "namespaces"), ("bind", "clusterroles.rbac.authorization.k8s.io/admin"),
                       ("create", "roles.rbac.authorization.k8s.io"),
                       # the webhooks' business (their own account, below)
                       ("patch", "customresourcedefinitions/llms.kubechain.dev"),
                       ("create", "subjectaccessreviews.authorization.k8s.io"),
                       ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
                       ("update", "validatingwebhookconfigurations/kubechain.dev")):
        assert not can(stack, "kubechain-operator", verb, what, *ns), f"the operator may {verb} {what}"
    # Its replicas' Lease, in its own namespace only (the Role), and only that name.
    system = ("-n", "kubechain-system")
    for verb, what in (("create", "leases.coordination.k8s.io"), ("update", "leases.coordination.k8s.io/kubechain-operator")):
        assert can(stack, "kubechain-operator", verb, what, *system), f"the operator may not {verb} {what}"
    for verb, what, where in (("update", "leases.coordination.k8s.io/other", system),
                              ("create", "secrets", system), ("update", "secrets/kubechain-webhook-cert", system),
                              ("create", "leases.coordination.k8s.io", ns)):
        assert not can(stack, "kubechain-operator", verb, what, *where), f"the operator may {verb} {what}"
    # The webhooks parse whatever the apiserver sends them: they read what the validators need, ask the apiserver
    # about authors, point it at themselves and keep their certificate; no Secret, token, Job or kubechain write.
    for verb, what, where in (("watch", "agents.kubechain.dev", ns), ("list", "runquotas.kubechain.dev", ()),
                              ("get", "namespaces", ()), ("create", "subjectaccessreviews.authorization.k8s.io", ()),
                              ("patch", "customresourcedefinitions/llms.kubechain.dev", ()),
                              ("update", "mutatingwebhookconfigurations/kubechain.dev", ()),
                              ("create", "secrets", system), ("update", "secrets/kubechain-webhook-cert", system)):
        assert can(stack, "kubechain-webhooks", verb, what, *where), f"the webhooks may not {verb} {what}"
    for verb, what, where in (("get", "secrets", ns), ("get", "secrets/other", system), ("list", "secrets", system),
                              ("create", "serviceaccounts/kubechain-actor", ns), ("create", "jobs.batch", ns),
                              ("patch", "taskruns.kubechain.dev", ns), ("create", "taskruns.kubechain.dev", ns),
                              ("patch", "customresourcedefinitions/taskruns.kubechain.dev", ()),
                              ("update", "validatingwebhookconfigurations/other", ()),
                              ("update", "leases.coordination.k8s.io/kubechain-operator", system)):
        assert not can(stack, "kubechain-webhooks", verb, what, *where), f"the webhooks may {verb} {what}"
    # The actors' accounts: the operator binds the one actor role and mints tokens of the one account name.
    assert can(stack, "kubechain-operator", "bind", "clusterroles.rbac.authorization.k8s.io/kubechain-actor", *ns)
    assert can(stack, "kubechain-operator", "create", "serviceaccounts/kubechain-actor", "--subresource=token", *ns)
    assert not can(stack, "kubechain-operator", "create", "serviceaccounts/default", "--subresource=token", *ns)
    # The web console watches the kubechain kinds and asks who a token is and what it may do; it acts with the
    # user's own token, so its account writes nothing and reads no Secrets.
    for verb, what in (("watch", "taskruns.kubechain.dev"), ("list", "agents.kubechain.dev"),
                       ("create", "tokenreviews.authentication.k8s.io"),
                       ("create", "subjectaccessreviews.authorization.k8s.io")):
        assert can(stack, "kubechain-ui", verb, what, *ns), f"the console may not {verb} {what}"
    for verb, what in (("get", "secrets"), ("get", "llms.kubechain.dev"), ("patch", "taskruns.kubechain.dev"),
                       ("get", "configmaps")):
        assert not can(stack, "kubechain-ui", verb, what, *ns), f"the console may {verb} {what}"

    # The actor's own checkpoint code, with a token of that account: status, sealed context, events all work.
    kube.apply([task("t", "nobody", "hello")])
    run = kube.wait_for("taskrun", "t-run", lambda o: bool(o.get("status")))
    kube.run("patch", "taskrun", "t-run", "--subresource=status", "--type=merge", "-p", '{"status":{"epoch":1}}')
    server, ca, insecure = kubeconfig_server(stack.kubeconfig)
    token = kube.run("create", "token", "kubechain-actor", "--duration=10m").stdout.strip()
    rest = KubeREST.for_run(KubeCredentials(server=server, token=SecretStr(token), ca_data=ca, insecure=insecure,
                                            expires_at=time.time() + 600))
    store = KubeCheckpointStore(TaskRunRef(namespace=kube.namespace, name="t-run", uid=run["metadata"]["uid"]),
                                epoch=1, rest=rest, retry_seconds=5)

    kube.apply([secret()])

    async def actor_writes() -> tuple[TaskRunStatus, tuple[int, dict]]:
        status = await store.load()
        await store.save(status.model_copy(update={"step": 7}))  # a field only actors write
        await store.event("Probe", "an event from the actor's account")
        secret_read = await rest.send("GET", f"/api/v1/namespaces/{kube.namespace}/secrets/llm-key")
        try:
            return await store.load(), secret_read
        finally:
            await rest.close()

    import asyncio
    written, (code, body) = asyncio.run(actor_writes())
    assert written.step == 7
    assert "Probe" in [e["reason"] for e in kube.events("t-run")]
    assert code == 403, body


# --- a Ray cluster laid out like KubeRay's, losing a worker node ---------------------------------------

# Every run's first reply waits at a gate (the scripted server's "hold") until the node is gone: all 20 are in
# flight when it goes, however long their actors took to start. The steps after are quick.
RUNS, STEPS, LATENCY = 20, 4, 1.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head with num-cpus 0 and two worker nodes; actors ask for 0.01 CPU (as kuberay/base/operator.yaml)."""
    workdir = tmp_path_factory.mktemp("cluster")
    env = LocalEnvironment(workdir, operator_env={"KUBECHAIN_ACTOR_NUM_CPUS": "0.01"}, head_cpus=0, worker_cpus=(2, 2),
                           ray_client=False,  # the session stack's operator uses Ray Client: one proxy per machine
                           telemetry_env={"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"})
    with env:
        yield env


def test_losing_a_worker_node_loses_no_run(cluster, tmp_path):
    namespace = "node-loss"
    kubectl(cluster.kubeconfig, "create", "namespace", namespace)
    kube = Kube(cluster, namespace)
    model = "node-loss"
    cluster.llm.set_script(model, [{"tool_calls": [{"name": "noop", "arguments": {"i": 0}}], "hold": model}] +
                           [{"tool_calls": [{"name": "noop", "arguments": {"i": i}}], "latency": LATENCY}
                            for i in range(1, STEPS)] + [{"content": "done after {last_tool_result}"}])
    kube.apply([secret(), llm("m", cluster.llm.base_url, model),
                toolset("t", inline=[{"name": "noop", "description": "no-op", "execution": {"builtin": {"name": "echo"}}}]),
                agent("a", "m", ["t"])])
    kube.wait_ready("agent", "a")
    kube.apply([task(f"r{i}", "a", f"run {i}") for i in range(RUNS)])
    mine = lambda: [a for a in actors(cluster) if a["state"] == "ALIVE" and a.get("name", "").startswith(f"{namespace}/")]
    asking = lambda: {r["messages"][1]["content"] for r in cluster.llm.requests() if r["model"] == model}
    try:
        wait_until(lambda: len(mine()) == RUNS and len(asking()) == RUNS, timeout=240,
                   what=f"{RUNS} actors alive, each run asking its first step")
    except AssertionError as failed:
        raise AssertionError(f"{failed}: {len(mine())} alive, {len(asking())} asking") from None
    placement = {a["node_id"] for a in mine()}
    head = head_node_id(cluster)
    assert head not in placement and len(placement) == 2, "actors must spread over the two workers, none on the head"

    victim = cluster.ray.workers[0]
    on_victim = set(own_session_members(victim.proc))  # the node's raylet and its worker processes
    affected = {a["name"] for a in mine() if a.get("pid") in on_victim}
    killed_at = time.monotonic()
    victim.kill()
    cluster.llm.open_gate(model)
    for i in range(RUNS):
        run = kube.wait_phase(f"r{i}-run", "Completed", timeout=240)
        assert run["status"]["output"].startswith("done after")
        assert run["status"]["step"] == STEPS + 1
        assert [r["state"] for r in run["status"]["toolCallHistory"]] == ["Succeeded"] * STEPS
    recovered_in = time.monotonic() - killed_at
    restarted = [kube.get("taskrun", f"r{i}-run")["status"]["epoch"] for i in range(RUNS)]
    assert sum(e > 1 for e in restarted) >= len(affected) > 0
    # No step was asked twice except the ones in flight when the node died (their replies were never checkpointed).
    requests = [r for r in cluster.llm.requests() if r["model"] == model]
    assert len(requests) <= RUNS * (STEPS + 1) + len(affected)
    print(f"\nnode loss: {len(affected)}/{RUNS} runs on the lost node; all {RUNS} completed "
          f"{recovered_in:.1f} s after the kill; LLM requests {len(requests)} (minimum {RUNS * (STEPS + 1)})")


def head_node_id(cluster) -> str:
    import urllib.request
    request = urllib.request.Request(f"{cluster.ray.dashboard_url}/api/v0/nodes?limit=100",
                                     headers={"Authorization": f"Bearer {cluster.ray.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return next(n["node_id"] for n in json.load(response)["data"]["result"]["result"] if n.get("is_head_node"))
