"""Everything kubechain runs on, locally and for real: control plane, CRDs, Ray head, scripted LLM, operator.

Used by the integration tests, `make demo` and `make bench`. The operator runs as its own process
(`kopf run -m kubechain.operator.main`) against a Ray head started with `ray start --head`, as in production.
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

import yaml

from .controlplane import (REPO_ROOT, LocalControlPlane, StartupError, free_ports, http_get, kubeconfig_dict, log_tail,
                           spawn, stop_process)
from kubechain.demo.llm_server import ScriptedLLMServer
from .rayhead import LocalRayHead

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


OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "kubechain-system", "kubechain-operator"
OPERATOR_TOKEN_SECONDS = 7 * 24 * 3600  # longer than any test session


def operator_kubeconfig(admin: Path, server: str, ca: Path | None, path: Path) -> Path:
    """A kubeconfig with exactly the rights kuberay/base/operator-rbac.yaml gives the operator, as deployed: its
    ServiceAccount and ClusterRole applied, and a token for the account from the TokenRequest API."""
    kubectl(admin, "apply", "-f", str(REPO_ROOT / "kuberay" / "base" / "namespace.yaml"))
    kubectl(admin, "-n", OPERATOR_NAMESPACE, "apply", "-f", str(REPO_ROOT / "kuberay" / "base" / "operator-rbac.yaml"))
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": OPERATOR_TOKEN_SECONDS}}
    minted = kubectl(admin, "create", "--raw",
                     f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{OPERATOR_ACCOUNT}/token",
                     "-f", "-", input=json.dumps(request))
    token = json.loads(minted.stdout)["status"]["token"]
    path.write_text(json.dumps(kubeconfig_dict(server, OPERATOR_ACCOUNT, token, ca)))
    path.chmod(0o600)
    return path


RAY_CONNECT_SECONDS = 240  # see Operator._wait_for_ray


@dataclass
class Operator:
    """The operator as a separate process, `kopf run`, exactly as deployed - and, like a Deployment's
    pod, started again whenever it exits (kopf exits on some apiserver errors, e.g. a 404 on a watch
    while a restarted apiserver is not yet serving the CRDs)."""

    workdir: Path
    env: dict[str, str]
    admin_kubeconfig: Path  # for the harness's own checks (the operator's KUBECONFIG may be a restricted one)
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)
    health_port: int = 0
    restarts: int = 0
    _keep_running: threading.Event = field(default_factory=threading.Event)
    _log_start: int = 0

    def __post_init__(self) -> None:
        self.log = self.workdir / "logs" / "operator.log"

    def start(self, timeout: float = 60) -> None:
        self._spawn(timeout)
        self._keep_running.set()
        threading.Thread(target=self._restart_on_exit, daemon=True).start()
        self._wait_for_ray()

    def kill(self) -> None:
        """SIGKILL the operator, as a node failure would; it is started again (like a pod) by the watcher."""
        self.proc.kill()

    def reconfigure(self, **env: str | None) -> None:
        """Restart the operator (SIGTERM, as a rollout would) with these variables set (None: unset)."""
        for key, value in env.items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        restarts = self.restarts
        self.proc.terminate()
        self.wait_restarted(restarts + 1)

    def wait_restarted(self, restarts: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.restarts < restarts or not (self.healthy() and self.webhooks_configured()):
            if time.monotonic() > deadline:
                raise StartupError(f"the operator did not come back:\n{log_tail(self.log)}")
            time.sleep(0.2)
        self._wait_for_ray()

    def _wait_for_ray(self, timeout: float = RAY_CONNECT_SECONDS) -> None:
        """Until this operator process is connected to Ray, as a readiness probe gates a new pod. On this machine
        Ray's proxier sometimes fails to start a client's server, and ray.init gives up only ~100 s later (then
        the operator connects again): tests start from a connected operator instead of each allowing for it."""
        deadline = time.monotonic() + timeout
        while "connected to Ray at" not in self._own_log():
            if time.monotonic() > deadline:
                raise StartupError(f"the operator did not connect to Ray in {timeout} s:\n{log_tail(self.log)}")
            time.sleep(0.2)

    def _own_log(self) -> str:
        """What the current operator process has logged (the file holds every process's, one after another)."""
        with open(self.log, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def _spawn(self, timeout: float) -> None:
        (self.health_port,) = free_ports(1)
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        cmd = [sys.executable, "-m", "kopf", "run", "-m", "kubechain.operator.main", "--all-namespaces",
               "--standalone", f"--liveness=http://127.0.0.1:{self.health_port}/healthz"]
        self.proc = spawn(cmd, self.log, env={**os.environ, **self.env}, cwd=REPO_ROOT)
        deadline = time.monotonic() + timeout
        while not (self.healthy() and self.webhooks_configured()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise StartupError(f"the operator did not start:\n{log_tail(self.log)}")
            time.sleep(0.2)

    def _restart_on_exit(self) -> None:
        while self._keep_running.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is not None and self._keep_running.is_set():
                time.sleep(1)  # a crash-looping pod backs off too
                try:
                    self._spawn(60)
                    self.restarts += 1
                except StartupError:
                    continue
                if not self._keep_running.is_set():  # stopped while we were starting it
                    stop_process(self.proc, grace=10)
            time.sleep(0.3)

    def webhooks_configured(self) -> bool:
        """The apiserver calls its admission webhooks (or it serves none). The configurations existing is not
        enough: the apiserver picks them up through a watch, so a request right after kopf writes them may pass
        unchecked. A server-side dry-run of an invalid Tool must come back denied."""
        if self.env.get("KUBECHAIN_WEBHOOK_PORT", "0") == "0":
            return True
        result = kubectl(self.admin_kubeconfig, "create", "--dry-run=server", "-f", "-",
                         input=json.dumps(WEBHOOK_PROBE), check=False)
        return "denied the request" in result.stderr

    def healthy(self) -> bool:
        try:
            return http_get(f"http://127.0.0.1:{self.health_port}/healthz")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        self._keep_running.clear()
        stop_process(self.proc, grace=10)
        self.proc = None


class LocalEnvironment:
    """Start and stop the whole stack in `workdir`. Attributes: controlplane, ray, llm, operator, kubeconfig."""

    def __init__(self, workdir: Path, operator_env: dict[str, str] | None = None, llm_api_key: str | None = None,
                 telemetry_env: dict[str, str] | None = None, head_cpus: int = 4, worker_cpus: tuple[int, ...] = (),
                 ray_client: bool = True, admin_operator: bool = False, ray_env: dict[str, str] | None = None):
        """`telemetry_env` (OTEL_*, RAY_metrics_*...) goes to the operator and the Ray head (so to every actor);
        `ray_env` to the Ray head only (e.g. RAY_REDIS_ADDRESS: its GCS in a Redis, as with the gcs-ft overlay).
        The operator runs with the rights of kuberay/base/operator-rbac.yaml (`admin_operator`: the admin's)."""
        self.workdir = workdir
        self.telemetry_env = telemetry_env or {}
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus  # worker nodes: one `ray start` each
        # Ray Client (as against a KubeRay head service), or a driver on the GCS address: a second stack on the
        # same machine should use the latter, since every Ray Client proxy hands out the same ports (23000+).
        self.ray_client = ray_client
        self.ray_env = ray_env or {}
        self.metrics_port = self.webhook_port = 0
        self.controlplane = LocalControlPlane(workdir / "k8s")
        self.ray: LocalRayHead | None = None
        self.llm = ScriptedLLMServer(api_key=llm_api_key)
        self.operator: Operator | None = None
        self.operator_env = operator_env or {}
        self.admin_operator = admin_operator
        self.operator_kubeconfig: Path = self.kubeconfig

    @property
    def kubeconfig(self) -> Path:
        return self.controlplane.kubeconfig

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
            self.metrics_port, self.webhook_port = free_ports(2)
            if not self.admin_operator:
                cp = self.controlplane
                ca = cp.workdir / "certs" / "apiserver.crt"
                self.operator_kubeconfig = operator_kubeconfig(self.kubeconfig, cp.server, ca if ca.exists() else None,
                                                               self.workdir / "operator.kubeconfig")
            self.operator = Operator(self.workdir, {"KUBECONFIG": str(self.operator_kubeconfig),
                                                    **self.ray.driver_env(self.ray.client_address if self.ray_client
                                                                          else None),
                                                    "KUBECHAIN_PENDING_RETRY_SECONDS": "1",
                                                    "KUBECHAIN_METRICS_PORT": str(self.metrics_port),
                                                    "KUBECHAIN_WEBHOOK_PORT": str(self.webhook_port),
                                                    "KUBECHAIN_WEBHOOK_ADDRESS": "127.0.0.1",
                                                    "KUBECHAIN_WEBHOOK_HOST": "127.0.0.1",
                                                    "KUBECHAIN_WEBHOOK_CERT_DIR": str(self.workdir / "webhook"),
                                                    **self.telemetry_env, **self.operator_env},
                                     admin_kubeconfig=self.kubeconfig)
            self.operator.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for part in (self.operator, self.llm, self.ray, self.controlplane):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # stopping must go on for the other parts
                    pass

    def __enter__(self) -> "LocalEnvironment":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
