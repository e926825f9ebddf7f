"""What KubeRay's operator makes of a RayCluster, for a cluster that cannot run KubeRay: there is no KubeRay image
here (no registry), and its CRDs' CEL rules need an apiserver newer than the local 1.20. From the RayCluster's
own head and worker groups (kuberay/base/raycluster.yaml, as an overlay rendered it): the head Pod and its Service
`<cluster>-head-svc`, and each group's worker Pods, with the `ray start` command lines, the token-auth variables
and the /dev/shm volume that KubeRay v1.7 gives them (ray-operator/controllers/ray/common/pod.go, service.go).
No autoscaler: a group runs `replicas` pods.

No cluster DNS runs here either (no CoreDNS image): `host_aliases` maps each Service's names to its ClusterIP,
which the caller adds to the pods that look names up, as /etc/hosts entries; Ray's raylet then needs gRPC's native
resolver (its default, c-ares, reads no /etc/hosts), which these pods set: KubeRay's, with cluster DNS, need not.
"""
from __future__ import annotations

import copy

RAY_PORTS = ("gcs-server", "dashboard", "client", "metrics")  # the head container ports its Service exposes


def _start_params(params: dict) -> str:
    return " ".join(f"--{key}={value}" for key, value in sorted(params.items()))


def _auth_env(cluster: dict) -> list[dict]:
    auth = cluster["spec"].get("authOptions") or {}
    if auth.get("mode") != "token":
        return []
    return [{"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": auth["secretName"], "key": "auth_token"}}}]


def head_service_name(cluster: dict) -> str:
    return f"{cluster['metadata']['name']}-head-svc"


def _pod(cluster: dict, group: dict, node_type: str, name: str, command: str, env: list[dict]) -> dict:
    template = copy.deepcopy(group["template"])
    spec, meta = template["spec"], template.setdefault("metadata", {})
    cluster_name = cluster["metadata"]["name"]
    labels = {**meta.get("labels", {}), "ray.io/cluster": cluster_name, "ray.io/node-type": node_type,
              "ray.io/group": group.get("groupName", "headgroup")}
    container = spec["containers"][0]
    container["command"] = ["/bin/bash", "-lc", "--"]
    container["args"] = [f"ulimit -n 65536; {command}"]
    container["env"] = [*container.get("env", []), *env, *_auth_env(cluster),
                        {"name": "RAY_CLUSTER_NAME", "value": cluster_name},
                        {"name": "RAY_USAGE_STATS_KUBERAY_IN_USE", "value": "1"},
                        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
                        {"name": "GRPC_DNS_RESOLVER", "value": "native"}]
    container.setdefault("volumeMounts", []).append({"name": "shared-mem", "mountPath": "/dev/shm"})
    spec.setdefault("volumes", []).append({"name": "shared-mem", "emptyDir": {"medium": "Memory"}})
    spec.setdefault("restartPolicy", "Always")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": cluster["metadata"].get("namespace"), "labels": labels},
            "spec": spec}


def ray_cluster_objects(cluster: dict) -> list[dict]:
    """The head Service, the head Pod and the workers' Pods KubeRay would create for `cluster`."""
    name, namespace = cluster["metadata"]["name"], cluster["metadata"].get("namespace")
    head = cluster["spec"]["headGroupSpec"]
    head_params = {"dashboard-agent-listen-port": 52365, "metrics-export-port": 8080, **head.get("rayStartParams", {})}
    head_pod = _pod(cluster, {**head, "groupName": "headgroup"}, "head", f"{name}-head",
                    f"ray start --head --block {_start_params(head_params)}",
                    [{"name": "RAY_PORT", "value": "6379"}, {"name": "RAY_ADDRESS", "value": "127.0.0.1:6379"}])
    ports = [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"], "protocol": "TCP"}
             for p in head_pod["spec"]["containers"][0].get("ports", []) if p["name"] in RAY_PORTS]
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": head_service_name(cluster), "namespace": namespace,
                            "labels": {"ray.io/cluster": name, "ray.io/node-type": "head"}},
               "spec": {"selector": {"ray.io/cluster": name, "ray.io/node-type": "head"}, "ports": ports}}
    gcs = f"{head_service_name(cluster)}.{namespace}.svc.cluster.local:6379"
    workers = []
    for group in cluster["spec"].get("workerGroupSpecs", []):
        params = {"dashboard-agent-listen-port": 52365, "metrics-export-port": 8080, **group.get("rayStartParams", {})}
        for index in range(group.get("replicas", 1)):
            workers.append(_pod(cluster, group, "worker", f"{name}-{group['groupName']}-worker-{index}",
                                f"ray start --address={gcs} --block {_start_params(params)}",
                                [{"name": "RAY_ADDRESS", "value": gcs}]))
    return [service, head_pod, *workers]


def host_aliases(services: list[dict]) -> list[dict]:
    """/etc/hosts entries for `services` (as read back from the apiserver, with their ClusterIPs): every name a
    pod may use for each, short to fully qualified."""
    aliases = []
    for svc in services:
        name, namespace, ip = svc["metadata"]["name"], svc["metadata"]["namespace"], svc["spec"].get("clusterIP")
        if ip and ip != "None":
            aliases.append({"ip": ip, "hostnames": [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                                                    f"{name}.{namespace}.svc.cluster.local"]})
    return aliases
