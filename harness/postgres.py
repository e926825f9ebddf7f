"""A real PostgreSQL server (the Debian package's binaries) for the external context store (contextStorageRef).

PostgreSQL refuses to run as root, so the server runs as the `postgres` user: `setpriv` switches user and then
execs the server, so the PID we start is the postmaster's own (stopped by that PID, never by name). Its data
directory and socket directory are a temp dir owned by `postgres` (pytest's tmp dirs are root's, mode 0700).
The cluster has a password (scram-sha-256 over TCP on 127.0.0.1), so the DSN in a Secret is a real secret.
`restart()` keeps the port and the data: the database-down tests stop it and bring the same one back.
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from harness.controlplane import StartupError, free_ports, spawn, wait_until

DATABASE = "kubechain"


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory (apt-get install postgresql; `make postgres` does it)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env", *argv]


class LocalPostgres:
    """`postgres` on a free port of 127.0.0.1, its cluster in a temp dir of its own; stopped by PID."""

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir)
        self.bin = postgres_bin()
        self.root: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.password = secrets.token_hex(16)

    @property
    def dsn(self) -> str:
        """What the context store's Secret holds (key `dsn`)."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{DATABASE}?connect_timeout=5"

    def start(self, timeout: float = 60) -> "LocalPostgres":
        if self.bin is None:
            raise StartupError("PostgreSQL is not installed (apt-get install postgresql; `make postgres` does it)")
        if self.root is None:
            self._init()
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / "postgres.log"
        assert self.root is not None
        self.proc = spawn(_as_postgres([str(self.bin / "postgres"), "-D", str(self.root / "data"), "-p",
                                        str(self.port), "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                                        "-c", "fsync=off", "-c", "max_connections=200"]), log)
        wait_until(self._ready, timeout, "PostgreSQL", {"postgres": (self.proc, log)})
        return self

    def _init(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kubechain-pg-"))
        os.chmod(self.root, 0o755)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        [self.port] = free_ports(1)
        out = subprocess.run(_as_postgres([str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", "postgres",
                                           "--pwfile", str(pwfile), "--auth-local=trust",
                                           "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"]),
                             capture_output=True, text=True)
        pwfile.unlink()
        if out.returncode:
            raise StartupError(f"initdb failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        self._created = False

    def _ready(self) -> bool:
        """Accepting connections; the database made once (over the socket, as the cluster's owner)."""
        assert self.root is not None
        if subprocess.run([str(self.bin / "pg_isready"), "-h", str(self.root), "-p", str(self.port)],
                          capture_output=True).returncode:
            return False
        if not getattr(self, "_created", False):
            out = subprocess.run(_as_postgres([str(self.bin / "createdb"), "-h", str(self.root), "-p",
                                               str(self.port), "-U", "postgres", DATABASE]),
                                 capture_output=True, text=True)
            if out.returncode and "already exists" not in out.stderr:
                return False
            self._created = True
        return True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server we started, by its PID: `fast` (SIGINT: clients cut off, data kept) or `immediate`
        (SIGQUIT: a crash, recovered from the WAL at the next start)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        """The same cluster (port, data, password) again."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop it and delete its files."""
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
