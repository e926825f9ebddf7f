"""Everything kubechain runs on, locally and for real: control plane, CRDs, Ray head, scripted LLM, operator.

Used by the integration tests, `make demo` and `make bench`. Each operator replica runs as its own processes, as
a pod's containers (`kubechain operator`: kopf while it holds the Lease; `kubechain webhooks`), against a Ray head
started with `ray start --head`, as in production.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .controlplane import (REPO_ROOT, LocalControlPlane, StartupError, free_ports, http_get, kubeconfig_dict, log_tail,
                           spawn, stop_process)
from kubechain.demo.llm_server import ScriptedLLMServer
from .rayhead import LocalRayHead
from .tcpproxy import TCPProxy

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
WEBHOOK_PROBE = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Tool",
                 "metadata": {"name": "webhook-probe", "namespace": "default"},
                 "spec": {"description": "refused by the validating webhook", "execution": {"builtin": {"name": "echo"}},
                          "arguments": {"type": "object", "properties": {"x": {"type": "nonsense"}}}}}


class KubectlError(RuntimeError):
    pass


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", *args], input=input, text=True,
                            capture_output=True, timeout=60)
    if check and result.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result


def install_actor_role(kubeconfig: Path) -> None:
    """The `kubechain-actor` ClusterRole, as deployed: the operator binds each namespace's actor account to it."""
    roles = [doc for doc in yaml.safe_load_all((REPO_ROOT / "kuberay" / "base" / "ray-rbac.yaml").read_text())
             if doc and doc["kind"] == "ClusterRole"]
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(roles))


def install_crds(kubeconfig: Path) -> None:
    kubectl(kubeconfig, "apply", "-k", str(REPO_ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    # `kubectl get kubechain` needs discovery of every kind: wait until all of them are served.
    deadline = time.monotonic() + 30
    while kubectl(kubeconfig, "get", "kubechain", "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise StartupError("CRDs are not served after 30 s")
        time.sleep(0.3)


OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, WEBHOOKS_ACCOUNT = "kubechain-system", "kubechain-operator", "kubechain-webhooks"
OPERATOR_TOKEN_SECONDS = 7 * 24 * 3600  # longer than any test session


def account_kubeconfig(admin: Path, server: str, ca: Path | None, path: Path, account: str, rbac: str) -> Path:
    """A kubeconfig with exactly the rights kuberay/base/`rbac` gives `account`, as deployed: its ServiceAccount and
    roles applied, and a token for the account from the TokenRequest API."""
    kubectl(admin, "apply", "-f", str(REPO_ROOT / "kuberay" / "base" / "namespace.yaml"))
    kubectl(admin, "-n", OPERATOR_NAMESPACE, "apply", "-f", str(REPO_ROOT / "kuberay" / "base" / rbac))
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": OPERATOR_TOKEN_SECONDS}}
    minted = kubectl(admin, "create", "--raw", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{account}/token",
                     "-f", "-", input=json.dumps(request))
    token = json.loads(minted.stdout)["status"]["token"]
    path.write_text(json.dumps(kubeconfig_dict(server, account, token, ca)))
    path.chmod(0o600)
    return path


def served_here(obj: dict) -> dict:
    """A manifest object as the local apiserver (1.20) serves its kind: PodDisruptionBudget policy/v1 (1.21) and
    FlowSchema flowcontrol.apiserver.k8s.io/v1 (1.29) as v1beta1, whose specs are the same."""
    older = {("PodDisruptionBudget", "policy/v1"): "policy/v1beta1",
             ("FlowSchema", "flowcontrol.apiserver.k8s.io/v1"): "flowcontrol.apiserver.k8s.io/v1beta1"}
    version = older.get((obj.get("kind"), obj.get("apiVersion")))
    return {**obj, "apiVersion": version} if version else obj


def install_flowschema(admin: Path) -> None:
    """The operator's Lease requests in the leader-election priority level, as deployed (kuberay/base)."""
    schemas = yaml.safe_load_all((REPO_ROOT / "kuberay" / "base" / "flowschema.yaml").read_text())
    kubectl(admin, "apply", "-f", "-", input=yaml.safe_dump_all([served_here(s) for s in schemas if s]))


RAY_CONNECT_SECONDS = 240  # see Operator._wait_for_ray
CERT_SECRET = f"{OPERATOR_NAMESPACE}/kubechain-webhook-cert"


class Container:
    """One process of a replica, started again whenever it exits, as a pod's container is (kopf exits on some
    apiserver errors, e.g. a 404 on a watch while a restarted apiserver is not yet serving the CRDs)."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str], ready: Callable[[], bool]):
        self.cmd, self.log, self.env, self.ready = cmd, log, env, ready
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.log_start = 0
        self._keep_running = threading.Event()
        self.held = threading.Event()  # set: not restarted (its node is gone) until released

    def start(self, timeout: float = 60) -> None:
        self.spawn(timeout)
        self._keep_running.set()
        threading.Thread(target=self._restart_on_exit, daemon=True).start()

    def spawn(self, timeout: float) -> None:
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        self.proc = spawn(self.cmd, self.log, env={**os.environ, **self.env}, cwd=REPO_ROOT)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise StartupError(f"{self.cmd[-1]} did not start:\n{log_tail(self.log)}")
            time.sleep(0.2)

    def own_log(self) -> str:
        """What the current process has logged (the file holds every process's, one after another)."""
        with open(self.log, "rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def _restart_on_exit(self) -> None:
        while self._keep_running.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is not None and self._keep_running.is_set() and not self.held.is_set():
                time.sleep(1)  # a crash-looping container backs off too
                try:
                    self.spawn(60)
                    self.restarts += 1
                except StartupError:
                    continue
                if not self._keep_running.is_set():  # stopped while we were starting it
                    stop_process(self.proc, grace=10)
            time.sleep(0.3)

    def stop(self) -> None:
        self._keep_running.clear()
        stop_process(self.proc, grace=15)
        self.proc = None


@dataclass
class Operator:
    """One operator replica, as a pod of each Deployment: its reconciler (`kubechain operator`: kopf while it holds
    the Lease) and its webhooks (`kubechain webhooks`, with their own account's kubeconfig), two processes that
    restart on their own, like containers."""

    workdir: Path
    env: dict[str, str]
    admin_kubeconfig: Path  # for the harness's own checks (the operator's KUBECONFIG may be a restricted one)
    webhooks_kubeconfig: Path | None = None  # the webhooks' KUBECONFIG (None: the operator's)
    name: str = "operator"
    webhook_port: int = 0
    health_port: int = 0
    reconciler: Container = field(init=False)
    webhooks: Container = field(init=False)

    def __post_init__(self) -> None:
        logs = self.workdir / "logs"
        (self.health_port,) = free_ports(1)
        self.env = {**self.env, "KUBECHAIN_HEALTH_PORT": str(self.health_port),
                    "KUBECHAIN_WEBHOOK_PORT": str(self.webhook_port), "KUBECHAIN_LEASE_IDENTITY": self.name,
                    "KUBECHAIN_WEBHOOK_CERT_DIR": str(self.workdir / "webhook" / self.name)}
        cli = [sys.executable, "-m", "kubechain.clients.cli"]
        self.reconciler = Container([*cli, "operator"], logs / f"{self.name}.log", self.env, self.healthy)
        self.webhooks = Container([*cli, "webhooks"], logs / f"{self.name}-webhooks.log", self.webhooks_env(),
                                  self.webhooks_ready)

    def webhooks_env(self) -> dict[str, str]:
        return {**self.env, **({"KUBECONFIG": str(self.webhooks_kubeconfig)} if self.webhooks_kubeconfig else {})}

    @property
    def log(self) -> Path:
        return self.reconciler.log

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.reconciler.proc

    @property
    def restarts(self) -> int:
        return self.reconciler.restarts

    def start(self, timeout: float = 60) -> None:
        if self.webhook_port:
            self.webhooks.start(timeout)
        self.reconciler.start(timeout)
        deadline = time.monotonic() + timeout
        while not self.webhooks_configured():
            if time.monotonic() > deadline:
                raise StartupError(f"the webhooks do not answer:\n{log_tail(self.webhooks.log)}")
            time.sleep(0.2)
        self._wait_for_ray()

    def kill(self) -> None:
        """SIGKILL the whole replica (both processes), as a lost node would; they are started again."""
        for container in (self.webhooks, self.reconciler):
            if container.proc is not None:
                container.proc.kill()

    def kill_reconciler(self, hold: bool = False) -> None:
        """SIGKILL the reconciler only (an OOM, a crash): the replica's webhooks keep answering. `hold`: it is not
        started again until `release()` (as if its node were gone), so another replica must take the Lease."""
        if hold:
            self.reconciler.held.set()
        self.reconciler.proc.kill()

    def release(self) -> None:
        self.reconciler.held.clear()

    def roll(self) -> None:
        """SIGTERM both processes, as a rollout replacing the pod does, and wait for the new ones."""
        restarts = (self.reconciler.restarts, self.webhooks.restarts)
        for container in (self.webhooks, self.reconciler):
            container.proc.terminate()
        self.wait_restarted(restarts[0] + 1, webhooks=restarts[1] + 1)

    def reconfigure(self, **env: str | None) -> None:
        """Restart the reconciler (SIGTERM, as a rollout would) with these variables set (None: unset)."""
        for key, value in env.items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.reconciler.env, self.webhooks.env = self.env, self.webhooks_env()
        restarts = self.restarts
        self.reconciler.proc.terminate()
        self.wait_restarted(restarts + 1)

    def wait_restarted(self, restarts: int, timeout: float = 90, webhooks: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while (self.reconciler.restarts < restarts or self.webhooks.restarts < webhooks
               or not (self.healthy() and self.webhooks_configured())):
            if time.monotonic() > deadline:
                raise StartupError(f"the operator did not come back:\n{log_tail(self.log)}")
            time.sleep(0.2)
        self._wait_for_ray()

    def _wait_for_ray(self, timeout: float = RAY_CONNECT_SECONDS) -> None:
        """Until this replica's reconciler is connected to Ray (a standby connects too, to take over quickly), as
        a readiness probe gates a new pod. On this machine Ray's proxier sometimes fails to start a client's
        server, and ray.init gives up only ~100 s later (then the operator connects again): tests start from a
        connected operator instead of each allowing for it."""
        deadline = time.monotonic() + timeout
        while "connected to Ray at" not in self.reconciler.own_log():
            if time.monotonic() > deadline:
                raise StartupError(f"the operator did not connect to Ray in {timeout} s:\n{log_tail(self.log)}")
            time.sleep(0.2)

    def webhooks_configured(self) -> bool:
        """The apiserver calls its admission webhooks (or it serves none). The configurations existing is not
        enough: the apiserver picks them up through a watch, so a request right after they are written may pass
        unchecked. A server-side dry-run of an invalid Tool must come back denied."""
        if not self.webhook_port:
            return True
        result = kubectl(self.admin_kubeconfig, "create", "--dry-run=server", "-f", "-",
                         input=json.dumps(WEBHOOK_PROBE), check=False)
        return "denied the request" in result.stderr

    def webhooks_ready(self) -> bool:
        """This replica's webhook server says it can answer (its readiness probe)."""
        try:
            return http_get(f"https://127.0.0.1:{self.webhook_port}/readyz")[0] == 200
        except OSError:
            return False

    def healthy(self) -> bool:
        try:
            return http_get(f"http://127.0.0.1:{self.health_port}/healthz")[0] == 200
        except OSError:
            return False

    def leading(self) -> bool:
        try:
            return json.loads(http_get(f"http://127.0.0.1:{self.health_port}/healthz")[1]).get("leading") is True
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        for container in (self.reconciler, self.webhooks):
            container.stop()


class LocalEnvironment:
    """Start and stop the whole stack in `workdir`. Attributes: controlplane, ray, llm, operator (the first of
    operators), kubeconfig."""

    def __init__(self, workdir: Path, operator_env: dict[str, str] | None = None, llm_api_key: str | None = None,
                 telemetry_env: dict[str, str] | None = None, head_cpus: int = 4, worker_cpus: tuple[int, ...] = (),
                 ray_client: bool = True, admin_operator: bool = False, ray_env: dict[str, str] | None = None,
                 replicas: int = 1, webhooks: bool = True):
        """`telemetry_env` (OTEL_*, RAY_metrics_*...) goes to the operator and the Ray head (so to every actor);
        `ray_env` to the Ray head only (e.g. RAY_REDIS_ADDRESS: its GCS in a Redis, as with the gcs-ft overlay).
        The operator runs with the rights of kuberay/base/operator-rbac.yaml (`admin_operator`: the admin's).
        `replicas`: operator replicas (one reconciles, holding the Lease; each serves the webhooks). With more
        than one, the apiserver calls the webhooks through a TCP proxy, the Service's stand-in (harness/tcpproxy.py).
        `webhooks=False`: none registered (the floor the benchmarks compare with)."""
        self.workdir = workdir
        self.telemetry_env = telemetry_env or {}
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus  # worker nodes: one `ray start` each
        # Ray Client (as against a KubeRay head service), or a driver on the GCS address: a second stack on the
        # same machine should use the latter, since every Ray Client proxy hands out the same ports (23000+).
        self.ray_client = ray_client
        self.ray_env = ray_env or {}
        self.metrics_port = self.webhook_port = self.stream_port = 0
        self.controlplane = LocalControlPlane(workdir / "k8s")
        self.ray: LocalRayHead | None = None
        self.llm = ScriptedLLMServer(api_key=llm_api_key)
        self.operator: Operator | None = None
        self.operators: list[Operator] = []
        self.replicas, self.webhooks = replicas, webhooks
        self.proxy: TCPProxy | None = None
        self.operator_env = operator_env or {}
        self.admin_operator = admin_operator
        self.operator_kubeconfig: Path = self.kubeconfig
        self.webhooks_kubeconfig: Path = self.kubeconfig

    @property
    def kubeconfig(self) -> Path:
        return self.controlplane.kubeconfig

    @property
    def stream_url(self) -> str:
        """The first replica's live streams (kubechain/operator/streams.py)."""
        return f"http://127.0.0.1:{self.stream_port}"

    def start(self) -> "LocalEnvironment":
        try:
            self.controlplane.start()
            install_crds(self.kubeconfig)
            install_actor_role(self.kubeconfig)
            # The workers learn where the apiserver is, with no credentials: a run's actor writes with the token the
            # operator hands it, as in a cluster, where the Ray pods' account has no rights.
            self.ray = LocalRayHead(self.workdir / "ray", env={"KUBECONFIG": str(self.controlplane.anonymous_kubeconfig),
                                                               "RAY_preload_python_modules": "actors.preload",
                                                               **self.telemetry_env, **self.ray_env},
                                    num_cpus=self.head_cpus)
            self.ray.start()
            for cpus in self.worker_cpus:
                self.ray.add_worker(cpus)
            self.llm.start()
            # Ray Client, as against a KubeRay head service (and a driver process would die with the head).
            self.metrics_port, self.stream_port, *webhook_ports = free_ports(2 + self.replicas)
            if not self.admin_operator:
                cp = self.controlplane
                ca = cp.workdir / "certs" / "apiserver.crt"
                ca = ca if ca.exists() else None
                self.operator_kubeconfig = account_kubeconfig(self.kubeconfig, cp.server, ca, self.workdir / "operator.kubeconfig",
                                                              OPERATOR_ACCOUNT, "operator-rbac.yaml")
                install_flowschema(self.kubeconfig)
                self.webhooks_kubeconfig = account_kubeconfig(self.kubeconfig, cp.server, ca, self.workdir / "webhooks.kubeconfig",
                                                              WEBHOOKS_ACCOUNT, "webhooks-rbac.yaml")
            else:
                kubectl(self.kubeconfig, "apply", "-f", str(REPO_ROOT / "kuberay" / "base" / "namespace.yaml"))
            self.webhook_port = webhook_ports[0] if self.webhooks else 0
            if self.webhooks and self.replicas > 1:
                self.proxy = TCPProxy(webhook_ports, self.workdir / "logs" / "webhook-proxy.log").start()
                self.webhook_port = self.proxy.port
            env = {"KUBECONFIG": str(self.operator_kubeconfig),
                   **self.ray.driver_env(self.ray.client_address if self.ray_client else None),
                   "KUBECHAIN_PENDING_RETRY_SECONDS": "1",
                   "KUBECHAIN_METRICS_PORT": str(self.metrics_port),
                   "KUBECHAIN_WEBHOOK_ADDRESS": "127.0.0.1",
                   "KUBECHAIN_WEBHOOK_HOST": "127.0.0.1",
                   "KUBECHAIN_WEBHOOK_URL": f"https://127.0.0.1:{self.webhook_port}",
                   "KUBECHAIN_WEBHOOK_CERT_SECRET": CERT_SECRET,
                   "KUBECHAIN_WEBHOOK_DRAIN_SECONDS": "1",  # the proxy sees a replica unready within 0.2 s
                   **self.telemetry_env, **self.operator_env}
            for i in range(self.replicas):
                metrics = ({"KUBECHAIN_STREAM_PORT": str(self.stream_port)} if i == 0 else
                           {"KUBECHAIN_METRICS_PORT": str(free_ports(1)[0])})
                self.operators.append(Operator(self.workdir, {**env, **metrics}, admin_kubeconfig=self.kubeconfig,
                                               webhooks_kubeconfig=self.webhooks_kubeconfig,
                                               name="operator" if i == 0 else f"operator-{i}",
                                               webhook_port=webhook_ports[i] if self.webhooks else 0))
            self.operator = self.operators[0]
            for replica in self.operators:
                replica.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for part in (*self.operators, self.proxy, self.llm, self.ray, self.controlplane):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # stopping must go on for the other parts
                    pass

    def __enter__(self) -> "LocalEnvironment":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
