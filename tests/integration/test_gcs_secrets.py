"""No secret value in Ray's GCS (issue 18, item 6), read back from a Redis-backed GCS as the gcs-ft overlay deploys it.

Its own stack: a Ray head whose GCS keeps every table in a local Redis (RAY_REDIS_ADDRESS, with an external storage
namespace as KubeRay sets one). A run uses an LLM API key and an http tool header from Secrets, and gets its
actor's Kubernetes token; while its actor is alive (its tool call held open) and after it completed, every key of
the Redis is read (each by its type) and none holds either secret value, a JWT or Ray's auth token. The positive control: a value
passed as a detached actor's constructor argument, as the run's spec once was, is found by the same search, and so is
a real ServiceAccount token passed that way; a value put in Ray's internal KV is found through Ray's API as well."""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from harness.controlplane import session_members
from harness.localenv import LocalEnvironment, kubectl
from harness.redis import Entry, LocalRedis
from harness.rayhead import INHERITED_RAY_VARS

from .chaos import actors, wait_until
from .conftest import Kube, agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration

LLM_SECRET = f"sk-gcs-{secrets.token_hex(12)}"
TOOL_SECRET = f"tool-gcs-{secrets.token_hex(12)}"
JWT_HEADER = b"eyJhbGciOi"  # base64 of '{"alg":' - how every ServiceAccount token (a JWT) begins
STORAGE_NAMESPACE = "kubechain-gcs-test"  # KubeRay sets RAY_external_storage_namespace (the RayCluster's uid)


class HeldService:
    """An http tool's server: records each POST's Authorization header and holds the reply until `release()`."""

    def __init__(self) -> None:
        self.authorization: list[str | None] = []
        self.held, self._release = threading.Event(), threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                service.authorization.append(self.headers.get("Authorization"))
                service.held.set()
                service._release.wait(300)
                reply = b"fetched"
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def gcs_stack(tmp_path_factory: pytest.TempPathFactory):
    """Redis, then the whole stack on it; afterwards every process of both is gone (checked by PID)."""
    workdir = tmp_path_factory.mktemp("gcs-stack")
    redis = LocalRedis(workdir / "redis").start()
    env = LocalEnvironment(workdir, llm_api_key=LLM_SECRET, ray_client=False,  # a second stack: no Ray Client ports
                           ray_env={"RAY_REDIS_ADDRESS": redis.address,
                                    "RAY_external_storage_namespace": STORAGE_NAMESPACE})
    pids: dict[str, int] = {"redis-server": redis.proc.pid}
    try:
        env.start()
        yield env, redis
    finally:
        pids.update(env.controlplane.pids())
        if env.ray is not None and env.ray.proc is not None:  # the head's GCS, raylet, workers: its session
            pids.update({f"ray session member {pid}": pid for pid in session_members(env.ray.proc.pid)})
        for replica in env.operators:  # its reconciler and its webhooks
            for container in (replica.reconciler, replica.webhooks):
                if container.proc is not None:
                    pids[container.log.stem] = container.proc.pid
        env.stop()
        redis.stop()
    left = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not left, f"still running after the stack stopped: {left}"


def driver(env: LocalEnvironment, script: str, *args: str, stdin: str | None = None) -> str:
    """Run `script` as a Ray driver on the head's GCS address; its stdout. (A driver's command line is kept in the
    GCS's JOB table: values the search must find only where the script puts them go in on stdin.)"""
    base = {k: v for k, v in os.environ.items() if k not in INHERITED_RAY_VARS}
    result = subprocess.run([sys.executable, "-c", script, *args], env={**base, **env.ray.driver_env()},
                            input=stdin, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"driver failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


# A detached actor given its values as constructor arguments (as the run's spec once was), and a value in the KV.
CONSTRUCTOR_CANARY = """
import json, sys, ray
from ray.experimental import internal_kv
canary, token = json.load(sys.stdin)
ray.init(namespace="gcs-probe", log_to_driver=False)

@ray.remote(num_cpus=0)
class Holder:
    def __init__(self, *values):
        self.count = len(values)

    def ready(self):
        return self.count

holder = Holder.options(name="canary-holder", lifetime="detached").remote(canary, token)
assert ray.get(holder.ready.remote(), timeout=120) == 2
internal_kv._internal_kv_put(b"kubechain-test-canary", ("kv-" + canary).encode(), namespace="gcs-probe")
print("ok")
"""

# Every key and value of Ray's internal KV, through Ray's API, in the namespaces given (b"" for keys without one):
# the API cannot list namespaces, so the test takes them from the KV table's field names in Redis.
KV_DUMP = """
import base64, json, sys, ray
from ray.experimental import internal_kv as kv
ray.init(log_to_driver=False)
seen = []
for ns in [n.encode() for n in sys.argv[1:]]:
    for key in kv._internal_kv_list(b"", namespace=ns or None):
        value = kv._internal_kv_get(key, namespace=ns or None) or b""
        seen.append([base64.b64encode(ns).decode(), base64.b64encode(key).decode(), base64.b64encode(value).decode()])
print(json.dumps(seen))
"""


def kv_namespaces(entries: list[Entry]) -> list[str]:
    """The namespaces of Ray's internal KV ("" for keys without one): its keys are `@namespace_<ns>:<key>`."""
    [kv] = [e for e in entries if e.key == table("KV")]
    fields = kv.parts[0::2]
    return sorted({f.split(b":", 1)[0][len(b"@namespace_"):].decode() if f.startswith(b"@namespace_") else ""
                   for f in fields})


def table(name: str) -> bytes:
    """The Redis key of a GCS table: a hash named RAY<storage namespace>@<table>."""
    return f"RAY{STORAGE_NAMESPACE}@{name}".encode()


def found(entries: list[Entry], needle: bytes) -> list[bytes]:
    """The keys whose name or content holds `needle`."""
    return [e.key for e in entries if e.contains(needle)]


def leaks(entries: list[Entry], env: LocalEnvironment, dsn_password: str) -> dict[str, list[bytes]]:
    """Which secret is where: the run's Secret values (its context store's DSN too), any JWT (the actor's Kubernetes
    token), Ray's auth token."""
    needles = {"the LLM API key": LLM_SECRET.encode(), "the tool's Secret header": TOOL_SECRET.encode(),
               "a JWT (a Kubernetes token)": JWT_HEADER, "Ray's auth token": env.ray.token.encode(),
               "the context store's DSN": dsn_password.encode()}
    return {what: where for what, needle in needles.items() if (where := found(entries, needle))}


def gcs_tables(entries: list[Entry]) -> set[str]:
    prefix = table("")
    return {e.key[len(prefix):].decode() for e in entries if e.key.startswith(prefix)}


def test_no_secret_of_a_run_reaches_the_redis_of_rays_gcs(gcs_stack, postgres):
    env, redis = gcs_stack
    kube = Kube(env, "gcs-secrets")
    kubectl(env.kubeconfig, "create", "namespace", kube.namespace)
    service = HeldService()
    try:
        model = "gcs-model"
        env.llm.set_script(model, [{"tool_calls": [{"name": "fetch", "arguments": {"what": "news"}}]},
                                   {"content": "done: {last_tool_result}"}])
        fetch = {"name": "fetch", "description": "fetch", "execution": {"http": {
            "url": service.url, "timeoutSeconds": 300,
            "headers": [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "tool-auth", "key": "t"}}}]}}}
        kube.apply([secret(value=LLM_SECRET), secret("tool-auth", "t", TOOL_SECRET), secret("pg", "dsn", postgres.dsn),
                    llm("m", env.llm.base_url, model), toolset("tools", inline=[fetch]), agent("a", "m", ["tools"])])
        kube.wait_ready("agent", "a", timeout=60)
        kube.apply([task("t", "a", "fetch the news", contextStorageRef={"kind": "PostgreSQL", "name": "pg"})])

        # In flight: the actor has the API key (the LLM server, which requires it, answered), the tool's header,
        # and its Kubernetes token; it is alive, detached, in Ray's actor table.
        wait_until(service.held.is_set, timeout=180, what="the tool call in flight")
        assert service.authorization == [TOOL_SECRET]
        actor = kube.get("taskrun", "t-run")["status"]["actor"]
        assert [a["state"] for a in actors(env) if a.get("name") == actor["name"]] == ["ALIVE"]
        during = redis.everything()
        tables = gcs_tables(during)
        assert {"ACTOR", "ACTOR_TASK_SPEC", "KV", "JOB", "NODE"} <= tables, f"Ray's GCS is not in this Redis: {tables}"
        # What was searched includes the run's actor: its row in the actor table, and its creation task's spec (the
        # constructor's arguments), which the GCS keeps for a detached actor while it lives.
        assert found(during, actor["name"].encode()), "the run's actor is not in the Redis's actor table"
        [specs] = [e for e in during if e.key == table("ACTOR_TASK_SPEC")]
        assert bytes.fromhex(actor["id"]) in specs.parts[0::2], "the run's actor has no task spec in Redis"
        assert not (leaked := leaks(during, env, postgres.password)), \
            f"secrets in Ray's GCS (Redis) while the run's actor lives: {leaked}"

        service.release()
        done = kube.wait_phase("t-run", "Completed", timeout=120)
        assert done["status"]["output"] == "done: fetched"
        after = redis.everything()
        assert not (leaked := leaks(after, env, postgres.password)), f"secrets in Ray's GCS (Redis) after the run: {leaked}"
        assert kube.get("taskrun", "t-run")["status"]["sealedContext"]["store"]["secret"] == "pg"  # it had the DSN

        # The positive control, in the same Redis: a detached actor's constructor arguments are kept there (the
        # ACTOR_TASK_SPEC table), so the search above would have found a spec passed that way - a real
        # ServiceAccount token (the actor account's, as the run's actor gets) included.
        canary = f"canary-{secrets.token_hex(12)}"
        token = kubectl(env.kubeconfig, "-n", kube.namespace, "create", "token", "kubechain-actor").stdout.strip()
        assert token.encode().startswith(JWT_HEADER)
        assert driver(env, CONSTRUCTOR_CANARY, stdin=json.dumps([canary, token])).strip().endswith("ok")
        control = redis.everything()
        where = found(control, canary.encode())
        assert table("ACTOR_TASK_SPEC") in where, f"the constructor argument is not in Redis: {where}"
        assert found(control, token.encode()) == found(control, JWT_HEADER) == [table("ACTOR_TASK_SPEC")], \
            "the token passed as a constructor argument is not found (only) in the actor task specs"
        assert found(control, f"kv-{canary}".encode()) == [table("KV")], "a value put in Ray's KV is not in Redis"

        # Ray's internal KV through Ray's API: the KV canary is there, no secret of the run.
        namespaces = kv_namespaces(control)
        dump = json.loads(driver(env, KV_DUMP, *namespaces).strip().splitlines()[-1])
        values = [b"\n".join(base64.b64decode(part) for part in entry) for entry in dump]
        assert any(f"kv-{canary}".encode() in v for v in values), f"the KV canary is not listed: {namespaces}"
        for needle in (LLM_SECRET.encode(), TOOL_SECRET.encode(), JWT_HEADER):
            assert not any(needle in v for v in values), f"{needle!r} in Ray's internal KV"
        print(f"Redis keys: {len(control)}; GCS tables: {sorted(tables)}; constructor canary in: {where}; "
              f"KV through Ray's API: {len(values)} entries in namespaces {namespaces}")
    finally:
        service.close()
