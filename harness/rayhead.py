"""A real, local Ray head (`ray start --head --block`) with its own ports, temp dir and token.

Each instance is isolated from any other Ray cluster on the machine: it picks free ports
(including every agent port Ray would otherwise default to a fixed number), uses its own
short temp dir, and is stopped by killing its own process session, never `ray stop`.

Usage::

    with LocalRayHead(tmp_path, env={"KUBECONFIG": str(kubeconfig)}) as head:
        subprocess.run([sys.executable, "driver.py"], env={**os.environ, **head.driver_env()})

CLI::

    python -m harness.rayhead up --workdir DIR
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import portblocks
from harness.controlplane import (StartupError, exit_on_signals, free_ports,
                                            http_get, kill_session, log_tail, spawn,
                                            stop_process, wait_until, wait_while_alive,
                                            write_pids)

PORT_NAMES = ("port", "ray-client-server-port", "dashboard-port",
              "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "metrics-export-port", "node-manager-port",
              "object-manager-port")
WORKER_PORTS = 200
# Worker ports come from below the kernel's ephemeral range (32768+), where free_ports()
# picks the others, so the two never overlap (Ray refuses to start when they do), and above
# 23000-23999, which the Ray Client proxy hard-codes for its per-client servers.
WORKER_RANGE_LOW, WORKER_RANGE_HIGH = 24000, 32000
# That range in 8 slots of 1,000 held machine-wide (harness/portblocks.py), one per head: its own 200 worker ports
# on top, 200 for each of up to 4 worker nodes below.
WORKER_SLOT = 5 * WORKER_PORTS
# Ray Client's 23000-23999 in blocks of 50, one per head's proxy (harness/rayclient/sitecustomize.py); the first
# block is left to a proxy with Ray's own bounds.
CLIENT_BLOCK, CLIENT_LOW, CLIENT_HIGH = 50, 23050, 24000
SITECUSTOMIZE = Path(__file__).parent / "rayclient"
# What kuberay/base/raycluster.yaml sets on the head, for the same reason: Ray Client's proxy forks (Popen with a
# preexec_fn) a server per client while its gRPC threads run, and grpcio's fork handlers then crash ~1 child in 10
# ("Check failed: next_worker->state == KICKED", ray-project/ray#63202); the proxy waits out its channel timeout for
# the dead child before the client retries: ~100 s per connect here. The child execs at once, so it needs no handler.
RAY_HEAD_GRPC_ENV = {"GRPC_ENABLE_FORK_SUPPORT": "false"}
# Variables of the calling environment that would point the head at another cluster/token.
INHERITED_RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")


def ray_executable() -> str:
    """The `ray` CLI that belongs to this interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def session_err_tails(temp_dir: Path, lines: int = 20) -> str:
    """Tails of the non-empty `*.err` logs of Ray's latest session under `temp_dir`."""
    logs = sorted((temp_dir / "session_latest" / "logs").glob("*.err"))
    return "\n".join(log_tail(p, lines) for p in logs if p.stat().st_size > 0)


def keep_session_logs(temp_dir: Path, dest: Path) -> None:
    """Copy Ray's session logs out of the temp dir (which is removed) for post-mortems."""
    logs = temp_dir / "session_latest" / "logs"
    if logs.is_dir():
        shutil.copytree(logs, dest, dirs_exist_ok=True, ignore_dangling_symlinks=True,
                        symlinks=True)


class LocalRayHead:
    """A Ray head process with token auth, started in its own session in `workdir`."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, num_cpus: int = 4,
                 grace: float = 10.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.extra_env = dict(env or {})
        self.num_cpus = num_cpus
        self.grace = grace
        self.token = secrets.token_hex(16)
        self.log = self.workdir / "logs" / "ray-head.log"
        self.ports: dict[str, int] = {}
        self.worker_ports: tuple[int, int] = (0, 0)
        self.temp_dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.workers: list[LocalRayWorker] = []
        self._blocks: list[portblocks.PortBlock] = []  # the machine-wide port ranges this head holds
        self.client_server_ports: tuple[int, int] | None = None

    def __enter__(self) -> "LocalRayHead":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def gcs_address(self) -> str:
        """`host:port` of the GCS, what `ray.init(address=...)` takes for a full driver."""
        return f"127.0.0.1:{self.ports['port']}"

    @property
    def client_address(self) -> str:
        """The Ray Client (`ray://`) address."""
        return f"ray://127.0.0.1:{self.ports['ray-client-server-port']}"

    @property
    def dashboard_url(self) -> str:
        """Base URL of the dashboard HTTP API (needs `Authorization: Bearer <token>`)."""
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    def driver_env(self, address: str | None = None) -> dict[str, str]:
        """Environment a driver process needs to reach this head (GCS address by default).

        The token goes in RAY_AUTH_TOKEN, not RAY_AUTH_TOKEN_PATH: with the path variant the
        Ray Client server cannot start its per-client servers.
        """
        return {"RAY_ADDRESS": address or self.gcs_address, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.token}

    def start(self, timeout: float = 60, attempts: int = 2) -> None:
        """Start the head and wait until it answers; a start that fails is tried once more (on a busy
        2-core machine the raylet now and then misses its registration deadline)."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except StartupError:
                if attempt == attempts - 1:
                    raise

    def _start_once(self, timeout: float) -> None:
        """Start the head (reusing ports and temp dir from an earlier start) and wait until
        its GCS, client server and dashboard answer and its node is alive."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self._allocate()
        atexit.register(self.stop)
        self.proc = spawn(self._command(), self.log, env=self._head_env(), cwd=self.workdir)
        try:
            wait_until(self._ready, timeout, "the Ray head", {"ray start": (self.proc, self.log)})
        except StartupError as err:
            details = session_err_tails(self.temp_dir) if self.temp_dir else ""
            self.stop()
            raise StartupError(f"{err}\n{details}") from None
        except BaseException:
            self.stop()
            raise

    def add_worker(self, num_cpus: int, timeout: float = 60) -> "LocalRayWorker":
        """Start another node (`ray start --address=<head>`), as a KubeRay worker pod would; wait until it is alive."""
        worker = LocalRayWorker(self, num_cpus, len(self.workers))
        before = self.alive_nodes()
        worker.proc = spawn(worker.command(), worker.log, env=self._head_env(), cwd=self.workdir)
        wait_until(lambda: self.alive_nodes() > before, timeout, "a Ray worker node", {"ray worker": (worker.proc, worker.log)})
        self.workers.append(worker)
        return worker

    def alive_nodes(self) -> int:
        status, body = http_get(f"{self.dashboard_url}/api/v0/nodes?limit=100", self.token)
        return body.count(b'"ALIVE"') if status == 200 else 0

    def kill_head(self) -> None:
        """SIGKILL the head and everything it started (workers too), like a lost node.
        Ports and temp dir are kept so `start()` brings it back at the same addresses."""
        if self.proc is not None:
            kill_session(self.proc)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        """Stop the head (and worker nodes) and remove its temp dir. Idempotent."""
        for worker in self.workers:
            worker.kill()
        stop_process(self.proc, self.grace)
        self.proc = None
        if self.temp_dir is not None:
            keep_session_logs(self.temp_dir, self.workdir / "logs" / "ray-session")
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
        for block in self._blocks:  # a later start() allocates afresh
            block.release()
        self._blocks, self.ports, self.client_server_ports = [], {}, None
        atexit.unregister(self.stop)

    def pids(self) -> dict[str, int]:
        """PID of the `ray start` process (also its session id), for the CLI's pids file."""
        return {"ray-head": self.proc.pid} if self.proc else {}

    def is_alive(self) -> bool:
        """True while the `ray start --block` process runs."""
        return self.proc is not None and self.proc.poll() is None

    def _allocate(self) -> None:
        if not self.ports:
            self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
            if slot := portblocks.claim("ray-worker-ports", (WORKER_RANGE_HIGH - WORKER_RANGE_LOW) // WORKER_SLOT):
                self._blocks.append(slot)
                low = WORKER_RANGE_LOW + slot.index * WORKER_SLOT + 4 * WORKER_PORTS
            else:  # every slot held: a random base, which another head rarely shares
                low = random.randrange(WORKER_RANGE_LOW + 4 * WORKER_PORTS, WORKER_RANGE_HIGH - WORKER_PORTS, 10)
            self.worker_ports = (low, low + WORKER_PORTS - 1)
            if block := portblocks.claim("ray-client-ports", (CLIENT_HIGH - CLIENT_LOW) // CLIENT_BLOCK):
                self._blocks.append(block)
                low = CLIENT_LOW + block.index * CLIENT_BLOCK
                self.client_server_ports = (low, low + CLIENT_BLOCK)
        if self.temp_dir is None:
            # Short on purpose: Ray's unix socket paths live under it (107-char limit).
            self.temp_dir = Path(tempfile.mkdtemp(prefix="kc-ray-", dir="/tmp"))
        self.log.parent.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        ports = [f"--{name}={port}" for name, port in self.ports.items()]
        return [ray_executable(), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                "--dashboard-host=127.0.0.1", f"--num-cpus={self.num_cpus}",
                f"--min-worker-port={self.worker_ports[0]}",
                f"--max-worker-port={self.worker_ports[1]}", *ports]

    def _head_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in INHERITED_RAY_VARS}
        # Scratch files of Ray's helpers (multiprocessing dirs, the client server's default
        # temp dir) then land in our temp dir, which stop() removes, instead of /tmp.
        env["TMPDIR"] = str(self.temp_dir)
        # A lone head has nowhere to drain to; draining only delays stop() by up to 30 s.
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
        # Ray Client starts a server process per connection and gives it 30 s; a loaded 2-core box can need more.
        env["RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S"] = "90"
        env.update(RAY_HEAD_GRPC_ENV)
        if self.client_server_ports:
            env["KUBECHAIN_CLIENT_SERVER_PORTS"] = "%d-%d" % self.client_server_ports
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITECUSTOMIZE), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                   RAY_USAGE_STATS_ENABLED="0")
        return env

    def _ready(self) -> bool:
        if not (port_open(self.ports["port"]) and port_open(self.ports["ray-client-server-port"])):
            return False
        status, body = http_get(f"{self.dashboard_url}/api/v0/nodes", self.token)
        return status == 200 and b'"ALIVE"' in body


WORKER_PORT_NAMES = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
                     "dashboard-agent-grpc-port", "runtime-env-agent-port")


class LocalRayWorker:
    """A worker node of a LocalRayHead: its own raylet, ports and worker-port range, on this machine."""

    def __init__(self, head: LocalRayHead, num_cpus: int, index: int):
        self.head, self.num_cpus = head, num_cpus
        self.ports = dict(zip(WORKER_PORT_NAMES, free_ports(len(WORKER_PORT_NAMES))))
        low = head.worker_ports[0] - (index + 1) * WORKER_PORTS  # below the head's range, one range per node
        self.worker_ports = (low, low + WORKER_PORTS - 1)
        self.log = head.workdir / "logs" / f"ray-worker-{index}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [ray_executable(), "start", f"--address={self.head.gcs_address}", "--block",
                "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--num-cpus={self.num_cpus}",
                f"--min-worker-port={self.worker_ports[0]}", f"--max-worker-port={self.worker_ports[1]}",
                *[f"--{name}={port}" for name, port in self.ports.items()]]

    def kill(self) -> None:
        """SIGKILL the node and its worker processes, like a lost pod."""
        if self.proc is not None:
            kill_session(self.proc)
            self.proc.wait(10)
            self.proc = None


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """Write `export K=V` lines a shell can `source`."""
    path.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))


def main(argv: list[str] | None = None) -> int:
    """`up --workdir DIR`: run a Ray head in the foreground until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m harness.rayhead")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--num-cpus", type=int, default=4)
    parser.add_argument("--kubeconfig", type=Path, help="passed to actors as KUBECONFIG")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    env = {"KUBECONFIG": str(args.kubeconfig.resolve())} if args.kubeconfig else {}
    exit_on_signals()
    head = LocalRayHead(args.workdir, env=env, num_cpus=args.num_cpus)
    try:
        head.start(args.timeout)
        write_env_file(head.workdir / "ray.env", head.driver_env())
        write_pids(head.workdir / "ray.pids", {"cli": os.getpid(), **head.pids()})
        print(head.workdir / "ray.env", flush=True)
        print(f"dashboard: {head.dashboard_url}", file=sys.stderr)
        return wait_while_alive(head.is_alive)
    finally:
        head.stop()

if __name__ == "__main__":
    sys.exit(main())
