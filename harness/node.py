"""One real Kubernetes node on this machine, joined to a LocalControlPlane: pods really run, Services work.

containerd (its own root, state and socket in `workdir`, so it never meets another session's), kube-scheduler
(the control plane has none until a node exists), a kubelet (cgroupfs driver: PID 1 is not systemd) and kube-proxy
(iptables), all built or installed by `make node` (hack/node.sh). containerd, the kubelet, kube-proxy and the pods
live in the node's own network namespace (harness/nodenet.py: its veth to the host, its CNI bridge with
host-local addresses, its iptables, its path to the apiserver, so `kubernetes.default` works from pods). Images
come from OCI archives built here (no registry is reachable), imported into this containerd's `k8s.io` namespace.

What it leaves alone, so that sessions side by side on one machine do not meet: its cgroups live under
`/kubechain-<id>` (not `/kubepods`), its pods' network namespaces under containerd's state dir, its rules in its
own namespace but one (a DNAT matched on its own veth), and processes are stopped by the pids this harness started
or that its containerd recorded. What it does not isolate: the kubelet sets a few kernel tunables at start
(vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1: what every kubelet does), and its log garbage
collector removes /var/log/pods directories of pods it does not know, so two nodes running at once can lose each
other's logs (a tool's result is its termination message first; its log is the fallback).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from .controlplane import (NODE_NAME, REPO_ROOT, LocalControlPlane, free_ports, http_get, spawn,
                           stop_process, wait_until)
from .localenv import kubectl
from .nodenet import NodeNetwork

NODE_SCRIPT = REPO_ROOT / "hack" / "node.sh"
PAUSE_IMAGE = "localhost/kubechain/pause:3.4"
BUSYBOX_IMAGE = "localhost/kubechain/busybox:1.35"  # what container tools' tests run
CNI_BIN = "/usr/lib/cni"
# The rights a kubelet needs, as the Node authorizer would grant them (the control plane authorizes with RBAC only)
NODE_BINDING = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "kubechain:node"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                              "name": f"system:node:{NODE_NAME}"}]}


def find_node_assets() -> Path:
    """Run hack/node.sh (fast when cached) and return the cache directory it prints."""
    out = subprocess.run(["bash", str(NODE_SCRIPT)], check=True, capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def image_archive(assets: Path, image: str) -> Path:
    """Where hack/node.sh saved `image` (same naming as its `archive`)."""
    return assets / "images" / (image.replace("/", "_").replace(":", "_") + ".tar")


def v1_hierarchies() -> list[Path]:
    """The cgroup v1 hierarchies a kubelet's cgroupfs driver uses (the unified one is not for it)."""
    root = Path("/sys/fs/cgroup")
    return [p for p in sorted(root.iterdir()) if p.is_dir() and p.name != "unified" and not p.is_symlink()]


def make_cgroup_root(name: str) -> None:
    """/<name> in every hierarchy; cpuset's starts empty (no task may join), so it gets its parent's cpus/mems."""
    for hierarchy in v1_hierarchies():
        (hierarchy / name).mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (hierarchy / name / knob).write_text((hierarchy / knob).read_text())


def remove_cgroup_tree(name: str) -> None:
    """rmdir the tree, deepest first (a cgroup goes only once empty of tasks and children), in every hierarchy:
    on this hybrid layout runc mirrors the v1 tree into the unified one as well."""
    for hierarchy in (p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()):
        top = hierarchy / name
        if top.exists():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def unmount_under(directory: Path) -> None:
    """Unmount whatever is still mounted below `directory` (overlay rootfs, netns, the kubelet's rshared root)."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(f"{directory}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


class LocalNode:
    """containerd + kube-scheduler + kubelet in `workdir`, joined to `controlplane` as NODE_NAME."""

    def __init__(self, controlplane: LocalControlPlane, workdir: Path) -> None:
        self.controlplane = controlplane
        self.workdir = Path(workdir).resolve()
        self.logs = self.workdir / "logs"
        self.id = os.urandom(3).hex()
        self.cgroup_root = f"kubechain-{self.id}"
        self.socket = self.workdir / "containerd" / "containerd.sock"
        self.net: NodeNetwork | None = None
        self.apiserver = ("", 0)  # the apiserver's advertised address, the node's way to it
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def __enter__(self) -> LocalNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def node_ip(self) -> str:
        assert self.net is not None
        return self.net.node_ip

    def start(self, timeout: float = 180) -> None:
        """Start everything and wait until the node is Ready and schedulable (its not-ready taint lifted)."""
        assets = find_node_assets()
        self.net = NodeNetwork(self.id)
        deadline = time.monotonic() + timeout
        try:
            self.net.create()
            self.apiserver = self._advertised_apiserver()
            self.net.route_to(self.apiserver[0])
            self.net.route_host_to_pods()
            self._run("apiserver-forward", self.net.forward_apiserver(*self.apiserver))
            self._start_containerd(deadline)
            for image in (PAUSE_IMAGE, BUSYBOX_IMAGE):
                self.ctr("images", "import", str(image_archive(assets, image)))
            kubectl(self.controlplane.kubeconfig, "apply", "-f", "-", input=json.dumps(NODE_BINDING))
            self._start_scheduler(assets, deadline)
            self._start_kubelet(assets, deadline)
            self._start_kube_proxy(assets, deadline)
        except BaseException:
            self.stop()
            raise

    def ctr(self, *args: str, timeout: float = 120) -> str:
        """`ctr` against this node's containerd, in the kubelet's namespace."""
        return subprocess.run(["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args], check=True,
                              capture_output=True, text=True, timeout=timeout).stdout

    def stop(self) -> None:
        """Delete the node's pods (the kubelet stops them and tears their networks down), then stop the processes,
        newest first, kill what containerd still runs, and remove the bridge, cgroups and mounts. Idempotent."""
        if "kubelet" in self.procs and self.procs["kubelet"][0].poll() is None:
            self._drain()
        for name in reversed(list(self.procs)):
            if name == "containerd":
                self._kill_containers()
            stop_process(self.procs.pop(name)[0])
        self._kill_shims()
        unmount_under(self.workdir)
        self._remove_pod_logs()
        if self.net is not None:
            self.net.remove()
        remove_cgroup_tree(self.cgroup_root)

    # --- containerd ----------------------------------------------------------------------------

    def _start_containerd(self, deadline: float) -> None:
        d = self.workdir / "containerd"
        for sub in ("root", "state", "opt", "net.d", "ipam"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "net.d" / "10-kubechain.conflist").write_text(json.dumps(self._cni_config()))
        (d / "config.toml").write_text(self._containerd_config())
        self._run("containerd", ["containerd", f"--config={d / 'config.toml'}"], in_node=True)
        self._wait(lambda: self.socket.exists() and self._answers(), deadline, "containerd")

    def _answers(self) -> bool:
        try:
            return bool(self.ctr("version"))
        except subprocess.SubprocessError:
            return False

    def _containerd_config(self) -> str:
        d = self.workdir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # CRI streaming (exec, attach, port-forward) on a random loopback port, not the shared default 10010
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # pods' network namespaces in our state dir, not /var/run/netns beside other sessions'
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # the sandbox asks for oom_score_adj -998, which lowering needs CAP_SYS_RESOURCE: not ours here (runc's init
  # fails with EACCES). Clamped to containerd's own score instead.
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{d / 'state' / 'runc'}"
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{d / 'net.d'}"
  max_conf_num = 1
"""

    def _cni_config(self) -> dict:
        """A bridge in the node's namespace, the pods' gateway, masquerading what leaves it (rules in that
        namespace's own tables, as ip_forward is that namespace's own)."""
        assert self.net is not None
        hosts = list(self.net.pods.hosts())
        return {"cniVersion": "0.4.0", "name": f"kubechain-{self.id}", "plugins": [
            {"type": "bridge", "bridge": self.net.bridge, "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "dataDir": str(self.workdir / "containerd" / "ipam"),
                      "ranges": [[{"subnet": str(self.net.pods), "gateway": str(hosts[0]),
                                   "rangeStart": str(hosts[1]), "rangeEnd": str(hosts[-1])}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}}]}

    def _advertised_apiserver(self) -> tuple[str, int]:
        """Where the `kubernetes` Service's endpoint says the apiserver is (what pods reach through kube-proxy)."""
        endpoints = json.loads(kubectl(self.controlplane.kubeconfig, "-n", "default", "get", "endpoints",
                                       "kubernetes", "-o", "json").stdout)
        subset = endpoints["subsets"][0]
        return subset["addresses"][0]["ip"], subset["ports"][0]["port"]

    def _node_kubeconfig(self, component: str) -> Path:
        """The component's kubeconfig, with the apiserver at its advertised address (the node's path to it)."""
        ip, port = self.apiserver
        return self.controlplane.component_kubeconfig(component, server=f"https://{ip}:{port}")

    def _tasks(self) -> list[str]:
        try:
            return [line.split()[0] for line in self.ctr("tasks", "ls").splitlines()[1:] if line.strip()]
        except (subprocess.SubprocessError, OSError):
            return []

    def _kill_containers(self) -> None:
        """Whatever the kubelet left running: SIGKILL each task and delete it (its shim unmounts its rootfs)."""
        for task in self._tasks():
            for args in (("tasks", "kill", "--all", "--signal", "SIGKILL", task), ("tasks", "delete", "-f", task)):
                try:
                    self.ctr(*args)
                except (subprocess.SubprocessError, OSError):
                    pass

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design: kill those its state dir records (by pid, nothing else)."""
        state = self.workdir / "containerd" / "state"
        for pid_file in [*state.glob("io.containerd.runtime.v2.task/*/*/shim.pid"),
                         *state.glob("io.containerd.runtime.v2.task/*/*/init.pid")]:
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass

    def _remove_pod_logs(self) -> None:
        """The kubelet keeps pods' logs in /var/log/pods (fixed in 1.20, not under its root dir): remove those of
        the pods this node ran, and the /var/log/containers links to them. Their uids: its root dir's pods/, and
        the scheduler's events (a pod deleted a moment ago has no directory left there, its logs still may)."""
        uids = {p.name for p in (self.workdir / "kubelet" / "pods").glob("*")}
        events = kubectl(self.controlplane.kubeconfig, "get", "events", "-A", "--field-selector=reason=Scheduled",
                         "-o", "jsonpath={.items[*].involvedObject.uid}", check=False)
        uids.update(events.stdout.split() if events.returncode == 0 else [])
        for link in Path("/var/log/containers").glob("*.log"):
            if link.is_symlink() and any(f"_{uid}/" in os.readlink(link) for uid in uids):
                link.unlink(missing_ok=True)
        for uid in uids:
            for logs in Path("/var/log/pods").glob(f"*_{uid}"):
                shutil.rmtree(logs, ignore_errors=True)

    # --- scheduler and kubelet -----------------------------------------------------------------

    def _start_scheduler(self, assets: Path, deadline: float) -> None:
        (port,) = free_ports(1)
        self._run("kube-scheduler", [
            str(assets / "kube-scheduler"), f"--kubeconfig={self.controlplane.component_kubeconfig('kube-scheduler')}",
            f"--authentication-kubeconfig={self.controlplane.component_kubeconfig('kube-scheduler')}",
            f"--authorization-kubeconfig={self.controlplane.component_kubeconfig('kube-scheduler')}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={port}",
            "--port=0",  # 1.20 still opens an insecure port (10251) by default: parallel sessions collide
            f"--cert-dir={self.workdir / 'scheduler-certs'}"])
        self._wait(lambda: http_get(f"https://127.0.0.1:{port}/healthz")[0] == 200, deadline, "kube-scheduler")

    def _kubelet_config(self, port: int, healthz: int) -> dict:
        pki = self.controlplane.kubelet_pki
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{self.cgroup_root}",
            "address": self.node_ip, "port": port, "readOnlyPort": 0,
            "healthzBindAddress": self.node_ip, "healthzPort": healthz,
            # only the apiserver (its kubelet-client certificate, signed by this CA) may read pods' logs
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(pki.ca)}},
            "authorization": {"mode": "AlwaysAllow"},
            "makeIPTablesUtilChains": False, "failSwapOn": False, "resolvConf": "/etc/resolv.conf",
            # a shared disk: never taint the node for pressure another session causes
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "registerNode": True,
            # Ready is reported within 2 s of being so, not at the next 10 s tick (the not-ready taint goes then)
            "nodeStatusUpdateFrequency": "2s",
        }

    def _start_kubelet(self, assets: Path, deadline: float) -> None:
        port, healthz = free_ports(2)
        make_cgroup_root(self.cgroup_root)
        config = self.workdir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config(port, healthz)))
        self._run("kubelet", [
            str(assets / "kubelet"), f"--config={config}",
            f"--kubeconfig={self._node_kubeconfig('kubelet')}",
            f"--root-dir={self.workdir / 'kubelet'}", f"--cert-dir={self.workdir / 'kubelet-certs'}",
            "--container-runtime=remote", f"--container-runtime-endpoint=unix://{self.socket}",
            f"--pod-infra-container-image={PAUSE_IMAGE}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.node_ip}"], in_node=True)
        self._wait(lambda: http_get(f"http://{self.node_ip}:{healthz}/healthz")[0] == 200, deadline,
                   "kubelet /healthz")
        self._wait(self._schedulable, deadline, f"node {NODE_NAME} Ready without taints")

    def _start_kube_proxy(self, assets: Path, deadline: float) -> None:
        """iptables mode, in the node's namespace. The conntrack sysctls are left alone (0): nf_conntrack_max is
        the machine's, not the namespace's."""
        assert self.net is not None
        healthz, metrics = free_ports(2)
        self._run("kube-proxy", [
            str(assets / "kube-proxy"), f"--kubeconfig={self._node_kubeconfig('kube-proxy')}",
            "--proxy-mode=iptables", f"--cluster-cidr={self.net.pods}", f"--hostname-override={NODE_NAME}",
            f"--bind-address={self.node_ip}", f"--healthz-bind-address={self.node_ip}:{healthz}",
            f"--metrics-bind-address={self.node_ip}:{metrics}", "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0"], in_node=True)
        self._wait(lambda: http_get(f"http://{self.node_ip}:{healthz}/healthz")[0] == 200, deadline,
                   "kube-proxy /healthz")

    def _schedulable(self) -> bool:
        result = kubectl(self.controlplane.kubeconfig, "get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        node = json.loads(result.stdout)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        return ready and not node["spec"].get("taints")

    def _drain(self, timeout: float = 60) -> None:
        """Delete every pod bound to this node and wait until containerd runs no task: the kubelet stops each
        sandbox through CRI, which tears its network down (the CNI DEL) and removes its namespace."""
        kubectl(self.controlplane.kubeconfig, "delete", "pods", "-A", f"--field-selector=spec.nodeName={NODE_NAME}",
                "--grace-period=0", "--force", "--wait=false", check=False)
        deadline = time.monotonic() + timeout
        while self._tasks() and time.monotonic() < deadline:
            time.sleep(0.5)

    # --- process helpers -----------------------------------------------------------------------

    def _run(self, name: str, cmd: list[str], in_node: bool = False) -> None:
        """Start `cmd` (in the node's network namespace if `in_node`: nsenter execs it, so the pid is its own)."""
        log = self.logs / f"{name}.log"
        wrapped = self.net.wrap(cmd) if in_node and self.net is not None else cmd
        self.procs[name] = (spawn(wrapped, log, cwd=self.workdir), log)

    def _wait(self, check, deadline: float, what: str) -> None:
        wait_until(check, max(deadline - time.monotonic(), 1), what, self.procs)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, (proc, _) in self.procs.items()}
