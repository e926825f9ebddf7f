"""What the benchmarks share: the local stack, objects, quantiles and the results files."""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubernetes import client, config

from harness.localenv import LocalEnvironment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NS = "bench"
GV = ("kubechain.dev", "v1alpha1")
API = "kubechain.dev/v1alpha1"


@contextmanager
def stack(name: str, operator_env: dict[str, str] | None = None, **options: Any):
    """A fresh local stack in .work/<name> with the `bench` namespace: yields (env, CustomObjectsApi). `options`:
    LocalEnvironment's (e.g. replicas=2)."""
    workdir = ROOT / ".work" / name
    shutil.rmtree(workdir, ignore_errors=True)
    with LocalEnvironment(workdir, operator_env=operator_env, **options) as env:
        config.load_kube_config(str(env.kubeconfig))
        client.CoreV1Api().create_namespace({"metadata": {"name": NS}})
        yield env, client.CustomObjectsApi()


def quantiles(values: list[float], scale: float = 1.0) -> dict[str, float]:
    ordered = sorted(v * scale for v in values)
    return {"p50": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "n": len(ordered)}


def create(api: client.CustomObjectsApi, plural: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    api.create_namespaced_custom_object(*GV, NS, plural, {"apiVersion": API, "kind": kind,
                                                           "metadata": {"name": name}, "spec": spec})


def create_tasks(kubeconfig: str, namespace: str, agent: str, count: int, clients: int) -> tuple[float, list[float]]:
    """(seconds taken, each create's seconds): Tasks t0..t<count-1> (user input "task <i>") created in `namespace`
    by `clients` threads, each with its own connection, as fast as they can."""
    latencies: list[float] = []
    names = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        api = client.CustomObjectsApi(config.new_client_from_config(kubeconfig))
        while True:
            with lock:
                i = next(names, None)
            if i is None:
                return
            body = {"apiVersion": API, "kind": "Task", "metadata": {"name": f"t{i}"},
                    "spec": {"agentRef": {"name": agent}, "userInput": f"task {i}"}}
            t0 = time.perf_counter()
            for attempt in range(10):  # as a client does: a refusal for load (429, 5xx) is tried again
                try:
                    api.create_namespaced_custom_object(*GV, namespace, "tasks", body)
                    break
                except client.ApiException as exc:
                    if exc.status == 409 and attempt:  # an earlier attempt was created after all
                        break
                    if exc.status not in (429, 500, 503, 504) or attempt == 9:
                        raise
                    time.sleep(0.5 * (attempt + 1))
            latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0, latencies


def noop_agent(api: client.CustomObjectsApi, name: str, base_url: str, model: str, **llm: Any) -> None:
    """An agent whose only tool is a no-op builtin, talking to the scripted LLM's `model` (`llm`: more LLM spec)."""
    create(api, "llms", "LLM", name, {"baseURL": base_url, "model": model, **llm})
    create(api, "toolsets", "ToolSet", name, {"tools": [{"name": "noop", "description": "does nothing",
                                                         "execution": {"builtin": {"name": "echo"}}}]})
    create(api, "agents", "Agent", name, {"llmRef": {"name": name}, "systemPrompt": "bench",
                                          "toolsetRefs": [{"name": name}]})


def wait_ready(api: client.CustomObjectsApi, agents: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all((api.get_namespaced_custom_object(*GV, NS, "agents", a).get("status") or {}).get("ready")
                  for a in agents):
        assert time.monotonic() < deadline, "agents never became ready"
        time.sleep(0.2)


def taskrun_status(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    try:
        return api.get_namespaced_custom_object(*GV, NS, "taskruns", name).get("status") or {}
    except client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise


def wait_done(api: client.CustomObjectsApi, run: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (status := taskrun_status(api, run)).get("phase") not in ("Completed", "Failed"):
        assert time.monotonic() < deadline, f"{run} did not finish: {status}"
        time.sleep(0.05)
    assert status["phase"] == "Completed", status
    return status


def record(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write results/<name>.json and append to results/history.jsonl."""
    result = {"bench": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              **metrics}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    with open(RESULTS / "history.jsonl", "a") as history:
        history.write(json.dumps(result) + "\n")
    return result


def table(result: dict[str, Any], rows: list[tuple[str, str, str]]) -> None:
    """rows: (label, metric key, goal)."""
    print(f"\nkubechain bench {result['bench']} — {result['date']} — {result['machine']}")
    print(f"{'metric':<52}{'p50':>10}{'p90':>10}{'n':>6}{'goal':>10}")
    for label, key, goal in rows:
        m = result[key]
        print(f"{label:<52}{m['p50']:>10.3f}{m['p90']:>10.3f}{m['n']:>6}{goal:>10}")
