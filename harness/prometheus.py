"""A real Prometheus server (the Debian package's binary) scraping the operator and the Ray head's metrics
agent, for tests of the metrics as a user would see them: through PromQL."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from harness.controlplane import StartupError, free_ports, http_get, spawn, stop_process, wait_until


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or next((p for p in ("/usr/bin/prometheus",) if Path(p).exists()), None)


class LocalPrometheus:
    def __init__(self, workdir: Path, targets: dict[str, str], interval: str = "1s"):
        self.workdir, self.targets, self.interval = Path(workdir), targets, interval
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> "LocalPrometheus":
        binary = prometheus_binary()
        if binary is None:
            raise StartupError("prometheus is not installed (apt-get install prometheus; `make test` does it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                     for job, target in self.targets.items()]}
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        [self.port] = free_ports(1)
        log = self.workdir / "prometheus.log"
        self.proc = spawn([binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                           f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                          log)
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200, timeout, "Prometheus",
                   {"prometheus": (self.proc, log)})
        return self

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 60) -> list[dict]:
        """The query's result once it is not empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := self.query(promql):
                return result
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never had {promql}; targets: {self.query_targets()}")

    def query_targets(self) -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=10) as response:
            return [{k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
                    for t in json.load(response)["data"]["activeTargets"]]

    def stop(self) -> None:
        stop_process(self.proc, 5)
        self.proc = None
