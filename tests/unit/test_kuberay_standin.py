"""harness/kuberay.py: the pods KubeRay would make of kuberay/base/raycluster.yaml (the image test runs them)."""
from pathlib import Path

import yaml

from harness.kuberay import head_service_name, host_aliases, ray_cluster_objects
from harness.rayhead import RAY_HEAD_GRPC_ENV

RAYCLUSTER = Path(__file__).parents[2] / "kuberay" / "base" / "raycluster.yaml"


def objects():
    cluster = yaml.safe_load(RAYCLUSTER.read_text())
    cluster["metadata"]["namespace"] = "kubechain-system"
    return {o["metadata"]["name"]: o for o in ray_cluster_objects(cluster)}


def test_the_head_pod_starts_ray_with_the_clusters_params_and_token():
    made = objects()
    head = made["kubechain-ray-head"]
    [container] = head["spec"]["containers"]
    assert container["command"] == ["/bin/bash", "-lc", "--"]
    [line] = container["args"]
    assert line.startswith("ulimit -n 65536; ray start --head --block ")
    assert "--num-cpus=0" in line and "--dashboard-host=0.0.0.0" in line
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "kubechain-ray-token", "key": "auth_token"}}
    # the Ray Client proxy's fork workaround, as on the suite's own head (harness/rayhead.py)
    assert {name: env[name]["value"] for name in RAY_HEAD_GRPC_ENV} == RAY_HEAD_GRPC_ENV
    assert head["spec"]["serviceAccountName"] == "kubechain-ray-head"
    assert {"name": "shared-mem", "emptyDir": {"medium": "Memory"}} in head["spec"]["volumes"]
    assert head["metadata"]["labels"]["ray.io/node-type"] == "head"


def test_the_head_service_is_the_one_the_operator_names_and_workers_join_it():
    made = objects()
    service = made[head_service_name({"metadata": {"name": "kubechain-ray"}})]
    assert service["metadata"]["name"] == "kubechain-ray-head-svc"  # operator.yaml's RAY_ADDRESS host
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}
    assert service["spec"]["selector"] == {"ray.io/cluster": "kubechain-ray", "ray.io/node-type": "head"}
    worker = made["kubechain-ray-agents-worker-0"]
    [line] = worker["spec"]["containers"][0]["args"]
    assert "ray start --address=kubechain-ray-head-svc.kubechain-system.svc.cluster.local:6379 --block" in line
    assert "--num-cpus=2" in line
    assert worker["spec"]["automountServiceAccountToken"] is False  # as the RayCluster says: no rights
    assert len([o for o in made.values() if o["kind"] == "Pod"]) == 2


def test_host_aliases_name_each_service_every_way_a_pod_may():
    services = [{"metadata": {"name": "a", "namespace": "n"}, "spec": {"clusterIP": "10.0.0.7"}},
                {"metadata": {"name": "headless", "namespace": "n"}, "spec": {"clusterIP": "None"}}]
    assert host_aliases(services) == [{"ip": "10.0.0.7", "hostnames": ["a", "a.n", "a.n.svc", "a.n.svc.cluster.local"]}]
