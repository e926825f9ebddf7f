"""The local test harness runs real servers: a Kubernetes control plane and a Ray head."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from typing import Iterator

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from harness.controlplane import LocalControlPlane, session_members
from harness.rayhead import LocalRayHead

pytestmark = pytest.mark.integration

# Runs in its own interpreter so the driver env (RAY_ADDRESS, token) never leaks into pytest.
DRIVER = textwrap.dedent("""
    import json, os, sys
    import ray

    ray.init(namespace="kubechain")  # address and token come from the environment

    @ray.remote(num_cpus=0)
    class Probe:
        def ping(self):
            return "pong"

        def kubeconfig(self):
            return os.environ.get("KUBECONFIG")

    probe = Probe.options(name=sys.argv[1], lifetime="detached").remote()
    print(json.dumps({"ping": ray.get(probe.ping.remote()),
                      "kubeconfig": ray.get(probe.kubeconfig.remote())}))
""")


def assert_no_leftovers(pids: list[int]) -> None:
    """Every process started for these sessions (workers included) is gone."""
    left = {pid: session_members(pid) for pid in pids}
    assert not any(left.values()), f"processes left behind: {left}"


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    cp = LocalControlPlane(tmp_path_factory.mktemp("controlplane"))
    cp.start(timeout=90)
    pids = list(cp.pids().values())
    yield cp
    cp.stop()
    assert_no_leftovers(pids)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory,
             control_plane: LocalControlPlane) -> Iterator[LocalRayHead]:
    head = LocalRayHead(tmp_path_factory.mktemp("rayhead"),
                        env={"KUBECONFIG": str(control_plane.kubeconfig)})
    head.start(timeout=90)
    yield head
    pids = list(head.pids().values())
    temp_dir = head.temp_dir
    head.stop()
    assert_no_leftovers(pids)
    assert temp_dir is not None and not temp_dir.exists()


@pytest.fixture(scope="module")
def core(control_plane: LocalControlPlane) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(control_plane.kubeconfig)))


def configmap(name: str, owner: client.V1ConfigMap | None = None) -> client.V1ConfigMap:
    refs = None
    if owner is not None:
        refs = [client.V1OwnerReference(api_version="v1", kind="ConfigMap",
                                        name=owner.metadata.name, uid=owner.metadata.uid)]
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, owner_references=refs),
                              data={"k": "v"})


def run_driver(head: LocalRayHead, actor_name: str, address: str | None = None) -> dict:
    env = {**os.environ, **head.driver_env(address)}
    proc = subprocess.run([sys.executable, "-c", DRIVER, actor_name], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dashboard_get(head: LocalRayHead, path: str, token: str | None) -> dict:
    req = urllib.request.Request(head.dashboard_url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


# --- Kubernetes ----------------------------------------------------------------------------


def test_apiserver_creates_namespace_and_configmap(core: client.CoreV1Api) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="harness")))
    core.create_namespaced_config_map("harness", configmap("hello"))

    assert core.read_namespaced_config_map("hello", "harness").data == {"k": "v"}


def test_owner_reference_garbage_collection(core: client.CoreV1Api) -> None:
    owner = core.create_namespaced_config_map("default", configmap("owner"))
    core.create_namespaced_config_map("default", configmap("child", owner=owner))

    core.delete_namespaced_config_map("owner", "default")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = {c.metadata.name for c in core.list_namespaced_config_map("default").items}
        if "child" not in names:
            return
        time.sleep(0.5)
    pytest.fail("the garbage collector did not delete the child ConfigMap within 30 s")


def test_restricted_user_is_forbidden(control_plane: LocalControlPlane) -> None:
    restricted = client.CoreV1Api(
        config.new_client_from_config(str(control_plane.restricted_kubeconfig)))

    with pytest.raises(ApiException) as err:
        restricted.list_namespaced_secret("default")

    assert err.value.status == 403


# --- Ray -----------------------------------------------------------------------------------


def test_detached_actor_via_gcs_address(ray_head: LocalRayHead,
                                        control_plane: LocalControlPlane) -> None:
    result = run_driver(ray_head, "probe-gcs")

    assert result == {"ping": "pong", "kubeconfig": str(control_plane.kubeconfig)}


def test_dashboard_lists_the_actor(ray_head: LocalRayHead) -> None:
    run_driver(ray_head, "probe-dashboard")

    body = dashboard_get(ray_head, "/api/v0/actors", ray_head.token)

    actors = body["data"]["result"]["result"]
    found = [a for a in actors if a.get("name") == "probe-dashboard"]
    assert found and found[0]["ray_namespace"] == "kubechain"
    assert found[0]["state"] == "ALIVE"


def test_dashboard_requires_the_token(ray_head: LocalRayHead) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        dashboard_get(ray_head, "/api/v0/actors", token=None)

    assert err.value.code in (401, 403)


def test_ray_client_address(ray_head: LocalRayHead) -> None:
    """A second Ray head on this machine (the session stack's runs beside it): its Ray Client proxy serves the client
    from a port of the range this head holds (harness/portblocks.py), never one the other proxy may pick."""
    result = run_driver(ray_head, "probe-client", address=ray_head.client_address)
    assert result["ping"] == "pong"
    low, high = ray_head.client_server_ports
    log = next(ray_head.temp_dir.glob("session_latest/logs/ray_client_server.err")).read_text()
    used = [int(port) for port in re.findall(r"SpecificServer started on port: (\d+)", log)]
    assert used and all(low <= port < high for port in used), (used, (low, high))


def test_head_restarts_on_the_same_addresses_after_kill(ray_head: LocalRayHead) -> None:
    addresses = (ray_head.gcs_address, ray_head.client_address, ray_head.dashboard_url)
    old_pid = ray_head.pids()["ray-head"]

    ray_head.kill_head()
    assert not ray_head.is_alive() and session_members(old_pid) == []
    ray_head.start(timeout=90)

    assert (ray_head.gcs_address, ray_head.client_address, ray_head.dashboard_url) == addresses
    assert run_driver(ray_head, "probe-after-restart")["ping"] == "pong"
