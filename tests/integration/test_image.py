"""The operator's own image, deployed for real: `kuberay/Dockerfile` built here on a Ray base made from Debian's
packages (hack/image.sh), loaded into a real node's containerd, and the kind overlay (`kuberay/base`: the operator's
two replicas, the webhooks' Deployment, RBAC, Services, the console) applied to a cluster of its own, so nothing of
the session's local operator answers for it. The Ray cluster is what KubeRay would make of the overlay's RayCluster
(harness/kuberay.py: KubeRay itself cannot run here), from the same image. Then a Task runs to Completed: its actor
on the Ray worker pod, its LLM the scripted server on the host, every admission call through the webhooks' Service.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from harness.controlplane import LocalControlPlane
from harness.kuberay import host_aliases, ray_cluster_objects
from harness.localenv import kubectl, served_here
from harness.node import LocalNode
from kubechain.demo.llm_server import ScriptedLLMServer

from .conftest import LLM_KEY, Kube, agent, builtin_tool, llm, secret, task, toolset

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[2]
SYSTEM = "kubechain-system"
DEPLOYED_IMAGE = "docker.io/library/kubechain:dev"  # `kubechain:dev`, the kind overlay's, as the kubelet names it


@pytest.fixture(scope="module")
def image() -> tuple[Path, str]:
    """The image's OCI archive and name, built unless this checkout's is cached (a fresh machine: ~10 min)."""
    if os.geteuid() != 0:
        pytest.skip("building images and running a node needs root")
    built = subprocess.run([str(REPO / "hack" / "image.sh")], capture_output=True, text=True, timeout=3600,
                           env={**os.environ, "PYTHON": sys.executable}, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    archive = Path(built.stdout.strip().splitlines()[-1])
    return archive, "localhost/kubechain:" + archive.stem.removeprefix("localhost_kubechain_")


def apply(kubeconfig: Path, objects: list[dict]) -> None:
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all([served_here(o) for o in objects]))


def rendered(kubeconfig: Path) -> list[dict]:
    text = kubectl(kubeconfig, "kustomize", str(REPO / "kuberay" / "overlays" / "kind")).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def deploy(kubeconfig: Path) -> None:
    """What `make deploy` does, with the RayCluster made into its pods here: the CRDs, RBAC, Services and the
    Ray token first, then the workloads, each pod given /etc/hosts entries for the Services (no cluster DNS)."""
    objects = rendered(kubeconfig)
    [raycluster] = [o for o in objects if o["kind"] == "RayCluster"]
    raycluster["metadata"].setdefault("namespace", SYSTEM)
    ray = ray_cluster_objects(raycluster)
    token = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kubechain-ray-token", "namespace": SYSTEM},
             "stringData": {"auth_token": secrets.token_hex(16)}}
    workloads = [o for o in objects + ray if o["kind"] in ("Deployment", "Pod")]
    first = [o for o in objects + ray if o["kind"] not in ("Deployment", "Pod", "RayCluster")]
    apply(kubeconfig, [o for o in first if o["kind"] in ("Namespace", "CustomResourceDefinition")])
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    apply(kubeconfig, [o for o in first if o["kind"] not in ("Namespace", "CustomResourceDefinition")] + [token])
    services = json.loads(kubectl(kubeconfig, "get", "services", "-A", "-o", "json").stdout)["items"]
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"] if workload["kind"] == "Deployment" else workload["spec"]
        spec["hostAliases"] = host_aliases(services)
    apply(kubeconfig, workloads)


def pods(kubeconfig: Path) -> list[dict]:
    return json.loads(kubectl(kubeconfig, "-n", SYSTEM, "get", "pods", "-o", "json").stdout)["items"]


def all_ready(kubeconfig: Path) -> bool:
    """Every Deployment's replicas available, and every pod (the Ray ones included) Ready."""
    deployments = json.loads(kubectl(kubeconfig, "-n", SYSTEM, "get", "deployments", "-o", "json").stdout)["items"]
    available = all((d["status"].get("availableReplicas") or 0) == d["spec"]["replicas"] for d in deployments)
    ready = [any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
             for p in pods(kubeconfig)]
    return available and len(ready) == 7 and all(ready)  # 2 operators, 2 webhooks, the console, Ray head + worker


def what_failed(kubeconfig: Path) -> str:
    """Each pod's phase and restarts, and the last lines of any container that is not ready."""
    lines = []
    for pod in pods(kubeconfig):
        name = pod["metadata"]["name"]
        for status in pod["status"].get("containerStatuses", []):
            lines.append(f"{name}: ready={status['ready']} restarts={status['restartCount']} {status['state']}")
            if not status["ready"]:
                for previous in (True, False):
                    log = kubectl(kubeconfig, "-n", SYSTEM, "logs", name, f"--previous={str(previous).lower()}",
                                  "--tail=15", check=False).stdout
                    lines.append(log)
    return "\n".join(lines)


def rolled_out(kubeconfig: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not all_ready(kubeconfig):
        assert time.monotonic() < deadline, what_failed(kubeconfig)
        time.sleep(2)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, image):
    archive, name = image
    work = tmp_path_factory.mktemp("deployed")
    with LocalControlPlane(work / "controlplane", workloads=True) as cp, LocalNode(cp, work / "node") as node:
        node.ctr("images", "import", str(archive), timeout=600)
        node.ctr("images", "tag", "--force", name, DEPLOYED_IMAGE)
        # The LLM on the host, at the node's own link: what pods reach without a default route
        with ScriptedLLMServer(api_key=LLM_KEY, host=node.net.host_ip) as provider:
            deploy(cp.kubeconfig)
            rolled_out(cp.kubeconfig)
            yield SimpleNamespace(cp=cp, node=node, llm=provider)
            # Their ReplicaSets would make the pods again while the node drains (and it would wait them out)
            kubectl(cp.kubeconfig, "-n", SYSTEM, "delete", "deployments,replicasets", "--all", check=False)


def in_pod(kubeconfig: Path, target: str, code: str) -> str:
    """Python run inside a running container (kubectl exec, through the apiserver and the kubelet)."""
    result = kubectl(kubeconfig, "-n", SYSTEM, "exec", target, "--", "python", "-c", code, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


# On the head, with its token: each named actor's node address
ACTOR_NODES = """
import json
from ray.util.state import list_actors, list_nodes
nodes = {n.node_id: n.node_ip for n in list_nodes()}
print(json.dumps({a.name: nodes.get(a.node_id) for a in list_actors(detail=True) if a.name}))
"""


# Each call as the pod makes it: its mounted token, its CA, the `kubernetes` Service's address.
STATUS_OF = """
import json, ssl, sys, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
token = open(f"{sa}/token").read()
out = {}
for method, path, body in json.loads(%r):
    req = urllib.request.Request("https://kubernetes.default.svc" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        out[method + " " + path] = urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as exc:
        out[method + " " + path] = exc.code
print(json.dumps(out))
"""


def test_the_image_runs_a_task_to_completed_on_the_deployed_operator(deployed):
    kubeconfig = deployed.cp.kubeconfig
    kubectl(kubeconfig, "create", "namespace", "demo")
    # Kube's timeouts quote the operator's log: here, the pods' states and a replica's log (read when a wait fails)
    log = SimpleNamespace(read_text=lambda: what_failed(kubeconfig) + kubectl(
        kubeconfig, "-n", SYSTEM, "logs", "deployment/kubechain-operator", "--tail=40", check=False).stdout)
    kube = Kube(SimpleNamespace(kubeconfig=kubeconfig, operator=SimpleNamespace(log=log)), "demo")
    deployed.llm.set_script("deployed-model", [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"content": "The answer is {last_tool_result}."}])
    kube.apply([secret(), llm("model", deployed.llm.base_url, "deployed-model"),
                builtin_tool("calculator", "calculator"), toolset("math", refs=["calculator"]),
                agent("mathematician", "model", ["math"], prompt="Use the calculator.")])
    kube.apply([task("question", "mathematician", "What is 6 times 7?")])
    run = kube.wait_phase("question-run", "Completed", timeout=300)
    assert run["status"]["output"] == "The answer is 42."
    # Its actor, as the status names it, ran on the Ray worker pod (the head has num-cpus 0)
    worker = json.loads(kubectl(kubeconfig, "-n", SYSTEM, "get", "pod", "kubechain-ray-agents-worker-0", "-o",
                                "json").stdout)["status"]["podIP"]
    placed = json.loads(in_pod(kubeconfig, "kubechain-ray-head", ACTOR_NODES))
    assert placed[run["status"]["actor"]["name"]] == worker, placed
    # The apiserver called the webhooks through their Service: a Tool whose arguments are no JSON Schema is refused
    # with kubechain's own message, and kubectl reads LLMs as v1alpha2 through the conversion webhook.
    bad = builtin_tool("bad", "echo")
    bad["spec"]["arguments"] = {"type": "object", "properties": {"x": {"type": "nonsense"}}}
    refused = kube.apply([bad], check=False)
    assert refused.returncode != 0
    assert 'admission webhook "validate-tools.kubechain.dev" denied the request' in refused.stderr
    assert "arguments is not a valid JSON Schema" in refused.stderr
    converted = json.loads(kube.run("get", "llms.v1alpha2.kubechain.dev", "model", "-o", "json").stdout)
    assert converted["apiVersion"] == "kubechain.dev/v1alpha2"
    # The console answers, from its own pod
    ui = json.loads(kubectl(kubeconfig, "-n", SYSTEM, "get", "pods", "-l", "app.kubernetes.io/name=kubechain-ui",
                            "-o", "json").stdout)["items"][0]
    with urllib.request.urlopen(f"http://{ui['status']['podIP']}:8090/healthz", timeout=10) as answer:
        assert answer.status == 200


def test_the_operator_pod_has_exactly_its_rbac_files_rights(deployed):
    """From inside the operator's container, with its mounted token: what operator-rbac.yaml grants answers, what
    it leaves out is refused (the webhooks' rights moved to their own account; tasks are the users')."""
    calls = [
        ["GET", "/apis/kubechain.dev/v1alpha1/taskruns", None],                       # granted: list
        ["GET", f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/kubechain-operator", None],
        ["GET", "/api/v1/namespaces/demo/secrets", None],                             # granted: LLM keys
        ["DELETE", "/apis/kubechain.dev/v1alpha1/namespaces/demo/tasks/question", None],  # not: tasks are users'
        ["POST", f"/api/v1/namespaces/{SYSTEM}/secrets", {"metadata": {"name": "x"}}],  # not: create secrets
        ["PATCH", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/tasks.kubechain.dev", {}],  # webhooks'
        ["GET", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", None],  # webhooks'
        ["POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {"metadata": {"name": "x"}}],
    ]
    answers = json.loads(in_pod(deployed.cp.kubeconfig, "deployment/kubechain-operator", STATUS_OF % json.dumps(calls)))
    codes = [answers[f"{method} {path}"] for method, path, _ in calls]
    assert codes[:3] == [200, 200, 200], answers
    assert codes[3:] == [403] * 5, answers
