"""A real, local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager).

This is the envtest approach: no kubelet or container runtime, so Pods are stored but never
run, until a test asks for a real node (harness/node.py joins one: the credentials it needs are made here, since
the apiserver reads them only at its start). The controller-manager runs only the controllers whose absence would
make tests lie (ownerReference garbage collection, namespace deletion, service accounts and their tokens, Jobs,
and the node lifecycle: it lifts a new node's not-ready taint). The ServiceAccount admission plugin is on, as in any
cluster: a pod gets its account's token mounted unless it opts out, which a real node then enforces.

Usage::

    with LocalControlPlane(tmp_path) as cp:
        kubernetes.config.load_kube_config(str(cp.kubeconfig))

CLI (for humans and ``make demo``)::

    python -m harness.controlplane up --workdir DIR
"""

from __future__ import annotations

import argparse
import atexit
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

import yaml

from .pki import write_kubelet_client_pki

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARIES_SCRIPT = REPO_ROOT / "hack" / "k8s-binaries.sh"
# serviceaccount: each namespace's `default` account, which the ServiceAccount admission plugin requires of a pod
CONTROLLERS = "garbagecollector,namespace,serviceaccount,serviceaccount-token,job,nodelifecycle"
# What a cluster that runs Deployments adds (LocalControlPlane(workloads=True), the image test's): their ReplicaSets'
# pods, and the Endpoints (the apiserver's webhook calls) and EndpointSlices (kube-proxy) of their Services.
WORKLOAD_CONTROLLERS = "deployment,replicaset,endpoint,endpointslice"
NODE_NAME = "kubechain-node"  # the one node harness/node.py joins
# The node's components, each as the user its bootstrap ClusterRoleBinding (or harness/node.py's) names
COMPONENT_USERS = {"kubelet": (f"system:node:{NODE_NAME}", "system:nodes"), "kube-proxy": ("system:kube-proxy", ""),
                   "kube-scheduler": ("system:kube-scheduler", "")}


class StartupError(RuntimeError):
    """A local server did not come up; the message carries the tail of its log."""


# --- process helpers (shared with rayhead) -------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free TCP ports on 127.0.0.1.

    All sockets are held open until every port is chosen so the kernel cannot hand the
    same port out twice.
    """
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start `cmd` in its own session (so stopping can kill its whole process group)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=True)


def session_members(sid: int) -> list[int]:
    """PIDs of every process in session `sid` (Ray workers get their own process groups,
    but stay in the session of the process we started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def own_session_members(proc: subprocess.Popen) -> list[int]:
    """Members of the session `proc` led, guarding against PID reuse: the kernel only hands
    a leader's PID out again once its session is empty, so if a process with that PID
    exists after our leader was reaped, the session of that PID is somebody else's."""
    if proc.poll() is not None and os.path.exists(f"/proc/{proc.pid}"):
        return []
    return session_members(proc.pid)


def kill_session(proc: subprocess.Popen, wait: float = 5.0) -> None:
    """SIGKILL every process in the session that `proc` leads and wait (up to `wait` s)
    until they are gone, so ports and files are free when this returns."""
    deadline = time.monotonic() + wait
    while (members := own_session_members(proc)) and time.monotonic() < deadline:
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.poll()  # reap the leader if it is ours and has died
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the leader (it shuts its own children down), then SIGKILL whatever is left
    of its session after `grace` seconds, and reap the leader."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    kill_session(proc)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<{path} missing>"
    return f"--- tail of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    """Poll `check` until true; fail fast (with the log tail) if a watched process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, (proc, log) in procs.items():
            if proc.poll() is not None:
                raise StartupError(f"{name} exited with code {proc.returncode} while waiting "
                                   f"for {what}\n{log_tail(log)}")
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    tails = "\n".join(log_tail(log) for _, log in procs.values())
    raise StartupError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def http_get(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET `url` (TLS unverified: it is our own loopback server) and return (status, body)."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = ssl._create_unverified_context()  # noqa: S323 - loopback server with a self-signed cert
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def exit_on_signals() -> None:
    """Turn SIGTERM/SIGINT into SystemExit so `with`/`finally` blocks stop the servers."""
    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)


def wait_while_alive(is_alive: Callable[[], bool]) -> int:
    """Block until a managed process dies (returns 1); signals end this via SystemExit."""
    while is_alive():
        time.sleep(1.0)
    print("a managed process exited; stopping", file=sys.stderr)
    return 1


def write_pids(path: Path, pids: dict[str, int]) -> None:
    """One `NAME PID` line per process, the CLI itself first (kill that one to stop all)."""
    path.write_text("".join(f"{name} {pid}\n" for name, pid in pids.items()))


# --- the control plane ---------------------------------------------------------------------


def find_binaries() -> Path:
    """Run hack/k8s-binaries.sh (fast when cached) and return the directory it prints."""
    out = subprocess.run(["bash", str(BINARIES_SCRIPT)], check=True, capture_output=True,
                         text=True).stdout
    return Path(out.strip().splitlines()[-1])


def write_service_account_keys(key: Path, pub: Path) -> None:
    """Write an RSA key pair that signs and verifies service-account tokens."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                       check=True, capture_output=True)
        return
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    pub.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def kubeconfig_dict(server: str, user: str, token: str | None, ca: Path | None) -> dict:
    """A single-context kubeconfig that authenticates with a bearer token (none: anonymous)."""
    cluster: dict = {"server": server}
    if ca is not None:
        cluster["certificate-authority"] = str(ca)
    else:
        cluster["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token} if token else {}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user,
                                                   "namespace": "default"}}],
    }


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports in `workdir`."""

    def __init__(self, workdir: Path, binaries: Path | None = None, workloads: bool = False) -> None:
        """`workloads`: also run Deployments (WORKLOAD_CONTROLLERS) and call webhooks at their Services' endpoints
        (--enable-aggregator-routing: the apiserver runs on the host, where no kube-proxy makes ClusterIPs work;
        harness/node.py routes the host to the pods)."""
        self.workdir = Path(workdir).resolve()
        self.binaries = binaries
        self.workloads = workloads
        self.kubeconfig = self.workdir / "kubeconfig"
        self.restricted_kubeconfig = self.workdir / "restricted.kubeconfig"
        # Where the apiserver is, with no credentials: what the Ray workers get (their own identity has no rights).
        self.anonymous_kubeconfig = self.workdir / "anonymous.kubeconfig"
        self.logs = self.workdir / "logs"
        self.admin_token = secrets.token_hex(16)
        self.restricted_token = secrets.token_hex(16)
        self.component_tokens = {name: secrets.token_hex(16) for name in COMPONENT_USERS}
        self.server = ""
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def __enter__(self) -> "LocalControlPlane":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        """Start all three processes and wait until the API serves the `default` namespace."""
        bins = Path(self.binaries) if self.binaries else find_binaries()
        for sub in ("etcd", "certs", "kcm-certs", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._write_auth_files()
        etcd_port, peer_port, api_port, kcm_port = free_ports(4)
        self.server = f"https://127.0.0.1:{api_port}"
        self._apiserver_args = (bins, etcd_port, api_port)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        try:
            self._start_etcd(bins, etcd_port, peer_port, deadline)
            self._start_apiserver(bins, etcd_port, api_port, deadline)
            self._write_kubeconfigs()
            self._start_controller_manager(bins, kcm_port, deadline)
        except BaseException:
            self.stop()
            raise

    def restart_apiserver(self, down_seconds: float = 0, timeout: float = 60) -> None:
        """Stop kube-apiserver (SIGKILL), wait, and start it again on the same port: clients see it vanish."""
        proc, _ = self.procs.pop("kube-apiserver")
        kill_session(proc)
        proc.wait()
        time.sleep(down_seconds)
        self._start_apiserver(*self._apiserver_args, time.monotonic() + timeout)

    def stop(self) -> None:
        """Stop the processes, newest first. Idempotent."""
        for name in reversed(list(self.procs)):
            stop_process(self.procs.pop(name)[0])
        atexit.unregister(self.stop)

    def pids(self) -> dict[str, int]:
        """PIDs (also process-group ids) of the running processes, by name."""
        return {name: proc.pid for name, (proc, _) in self.procs.items()}

    def is_alive(self) -> bool:
        """True while every started process is still running."""
        return bool(self.procs) and all(p.poll() is None for p, _ in self.procs.values())

    def _run(self, name: str, cmd: list[str]) -> None:
        log = self.logs / f"{name}.log"
        self.procs[name] = (spawn(cmd, log, cwd=self.workdir), log)

    def _wait(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        wait_until(check, max(deadline - time.monotonic(), 1), what, self.procs)

    def component_kubeconfig(self, component: str, server: str | None = None) -> Path:
        """A kubeconfig for one of a node's components (COMPONENT_USERS), written on first use; `server`: the
        apiserver's address as the component reaches it (default: the loopback one)."""
        path = self.workdir / f"{component}.kubeconfig"
        if not path.exists():
            ca = self.workdir / "certs" / "apiserver.crt"
            path.write_text(yaml.safe_dump(kubeconfig_dict(server or self.server, COMPONENT_USERS[component][0],
                                                           self.component_tokens[component],
                                                           ca if ca.exists() else None)))
            path.chmod(0o600)
        return path

    def _write_auth_files(self) -> None:
        write_service_account_keys(self.workdir / "sa.key", self.workdir / "sa.pub")
        self.kubelet_pki = write_kubelet_client_pki(self.workdir / "pki")
        components = "".join(f"{self.component_tokens[name]},{user},{user}" + (f',"{group}"' if group else "") + "\n"
                             for name, (user, group) in COMPONENT_USERS.items())
        (self.workdir / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f"{self.restricted_token},restricted,restricted\n" + components)

    def _write_kubeconfigs(self) -> None:
        # The apiserver writes a self-signed cert bundle (leaf + its CA) into cert-dir.
        ca = self.workdir / "certs" / "apiserver.crt"
        ca_or_none = ca if ca.exists() else None
        for path, user, token in ((self.kubeconfig, "admin", self.admin_token),
                                  (self.restricted_kubeconfig, "restricted", self.restricted_token),
                                  (self.anonymous_kubeconfig, "anonymous", None)):
            path.write_text(yaml.safe_dump(kubeconfig_dict(self.server, user, token,
                                                           ca_or_none)))
            path.chmod(0o600)

    def _start_etcd(self, bins: Path, port: int, peer: int, deadline: float) -> None:
        url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
        self._run("etcd", [
            str(bins / "etcd"), "--name=default", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}"])
        self._wait(lambda: b"true" in http_get(f"{url}/health")[1], deadline, "etcd /health")

    def _start_apiserver(self, bins: Path, etcd_port: int, port: int, deadline: float) -> None:
        w = self.workdir
        self._run("kube-apiserver", [
            str(bins / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={w / 'certs'}",
            f"--token-auth-file={w / 'tokens.csv'}", "--authorization-mode=RBAC",
            f"--service-account-key-file={w / 'sa.pub'}",
            f"--service-account-signing-key-file={w / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            # how it reaches a node's kubelet (logs, exec), once one joins
            f"--kubelet-client-certificate={self.kubelet_pki.cert}", f"--kubelet-client-key={self.kubelet_pki.key}",
            "--kubelet-preferred-address-types=InternalIP",
            *(["--enable-aggregator-routing=true"] if self.workloads else [])])
        self._wait(lambda: http_get(f"{self.server}/readyz", self.admin_token)[0] == 200,
                   deadline, "kube-apiserver /readyz")
        ns = f"{self.server}/api/v1/namespaces/default"
        self._wait(lambda: http_get(ns, self.admin_token)[0] == 200, deadline,
                   "the default namespace")

    def _start_controller_manager(self, bins: Path, port: int, deadline: float) -> None:
        w = self.workdir
        self._run("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            f"--controllers={CONTROLLERS}" + (f",{WORKLOAD_CONTROLLERS}" if self.workloads else ""), f"--service-account-private-key-file={w / 'sa.key'}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={port}",
            # 1.20 still opens an insecure port (10252) by default: parallel sessions collide.
            "--port=0", f"--cert-dir={w / 'kcm-certs'}",
            f"--root-ca-file={w / 'certs' / 'apiserver.crt'}"])
        self._wait(lambda: http_get(f"https://127.0.0.1:{port}/healthz")[0] == 200, deadline,
                   "kube-controller-manager /healthz")


def main(argv: list[str] | None = None) -> int:
    """`up --workdir DIR`: run the control plane in the foreground until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m harness.controlplane")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    exit_on_signals()
    cp = LocalControlPlane(args.workdir)
    try:
        cp.start(args.timeout)
        (cp.workdir / "env").write_text(f"export KUBECONFIG={cp.kubeconfig}\n")
        write_pids(cp.workdir / "pids", {"cli": os.getpid(), **cp.pids()})
        print(cp.kubeconfig, flush=True)
        return wait_while_alive(cp.is_alive)
    finally:
        cp.stop()

if __name__ == "__main__":
    sys.exit(main())
