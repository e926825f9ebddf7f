"""Benchmarks of the vertical slice, on the real local stack (control plane, Ray head, scripted LLM, operator).

1. Task created → first LLM request  (goal ≤ 0.6 s p50)
2. Per-step control overhead: LLM reply → next LLM request, with a no-op tool and the checkpoint
   (goal ≤ 15 ms p50). Measured as the gap between consecutive requests of one conversation at the
   scripted server, which replies with zero latency: it includes the server's own ~1 ms.

Prints a table, writes bench/results/latest.json and appends to bench/results/history.jsonl.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from kubernetes import client, config

from kubechain.testing.localenv import LocalEnvironment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NS = "bench"
GV = ("kubechain.dev", "v1alpha1")
FIRST_SAMPLES = int(os.environ.get("BENCH_FIRST_SAMPLES", "20"))
STEP_RUNS, STEPS = int(os.environ.get("BENCH_STEP_RUNS", "5")), int(os.environ.get("BENCH_STEPS", "10"))


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": statistics.median(ordered), "p90": pick(0.9), "n": len(ordered)}


def create(api: client.CustomObjectsApi, plural: str, body: dict) -> None:
    api.create_namespaced_custom_object(*GV, NS, plural, body)


def setup(env: LocalEnvironment, api: client.CustomObjectsApi) -> None:
    client.CoreV1Api().create_namespace({"metadata": {"name": NS}})
    create(api, "llms", {"apiVersion": "kubechain.dev/v1alpha1", "kind": "LLM", "metadata": {"name": "first"},
                         "spec": {"baseURL": env.llm.base_url, "model": "bench-first"}})
    create(api, "llms", {"apiVersion": "kubechain.dev/v1alpha1", "kind": "LLM", "metadata": {"name": "steps"},
                         "spec": {"baseURL": env.llm.base_url, "model": "bench-steps"}})
    create(api, "toolsets", {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": "noop"},
                             "spec": {"tools": [{"name": "noop", "description": "does nothing",
                                                 "execution": {"builtin": {"name": "echo"}}}]}})
    for name, llm in (("first", "first"), ("steps", "steps")):
        create(api, "agents", {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
                               "spec": {"llmRef": {"name": llm}, "systemPrompt": "bench",
                                        "toolsetRefs": [{"name": "noop"}]}})
    env.llm.set_script("bench-first", [{"content": "done"}])
    env.llm.set_script("bench-steps", [{"tool_calls": [{"name": "noop", "arguments": {"i": 1}}]}] * STEPS
                       + [{"content": "done"}])
    deadline = time.monotonic() + 60
    while not all((api.get_namespaced_custom_object(*GV, NS, "agents", a).get("status") or {}).get("ready")
                  for a in ("first", "steps")):
        assert time.monotonic() < deadline, "agents never became ready"
        time.sleep(0.2)


def run_task(env: LocalEnvironment, api: client.CustomObjectsApi, name: str, agent: str) -> tuple[float, list[dict]]:
    """Create a Task; return (creation time, the LLM requests of its conversation) once it completed."""
    text = f"{name} at {time.time()}"
    body = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"agentRef": {"name": agent}, "userInput": text}}
    created = time.time()
    create(api, "tasks", body)
    deadline = time.monotonic() + 60
    while True:
        status = api.get_namespaced_custom_object_status(*GV, NS, "taskruns", f"{name}-run").get("status") \
            if _exists(api, f"{name}-run") else {}
        if (status or {}).get("phase") in ("Completed", "Failed"):
            break
        assert time.monotonic() < deadline, f"{name} did not finish: {status}"
        time.sleep(0.05)
    assert status["phase"] == "Completed", status
    mine = [r for r in env.llm.requests() if len(r["messages"]) > 1 and r["messages"][1].get("content") == text]
    return created, sorted(mine, key=lambda r: r["received_at"])


def _exists(api: client.CustomObjectsApi, name: str) -> bool:
    try:
        api.get_namespaced_custom_object(*GV, NS, "taskruns", name)
        return True
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def main() -> int:
    workdir = ROOT / ".work" / "bench"
    shutil.rmtree(workdir, ignore_errors=True)
    with LocalEnvironment(workdir) as env:
        config.load_kube_config(str(env.kubeconfig))
        api = client.CustomObjectsApi()
        setup(env, api)
        first = []
        for i in range(FIRST_SAMPLES):
            created, requests = run_task(env, api, f"first-{i}", "first")
            first.append(requests[0]["received_at"] - created)
        gaps = []
        for i in range(STEP_RUNS):
            _, requests = run_task(env, api, f"steps-{i}", "steps")
            assert len(requests) == STEPS + 1, len(requests)
            gaps += [b["received_at"] - a["received_at"] for a, b in zip(requests, requests[1:])]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "task_created_to_first_llm_request_s": quantiles(first),
        "per_step_overhead_ms": {k: (v * 1000 if k != "n" else v) for k, v in quantiles(gaps).items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    with open(RESULTS / "history.jsonl", "a") as history:
        history.write(json.dumps(result) + "\n")
    f, s = result["task_created_to_first_llm_request_s"], result["per_step_overhead_ms"]
    print(f"\nkubechain bench — {result['date']} — {result['machine']}")
    print(f"{'metric':<44}{'p50':>10}{'p90':>10}{'n':>6}{'goal':>12}")
    print(f"{'Task created → first LLM request (s)':<44}{f['p50']:>10.3f}{f['p90']:>10.3f}{f['n']:>6}{'≤ 0.6':>12}")
    print(f"{'per-step control overhead (ms)':<44}{s['p50']:>10.1f}{s['p90']:>10.1f}{s['n']:>6}{'≤ 15':>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
