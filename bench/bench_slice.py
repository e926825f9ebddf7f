"""The vertical slice, on the real local stack (control plane, Ray head, scripted LLM, operator).

1. Task created → first LLM request  (goal ≤ 0.6 s p50)
2. Per-step control overhead: LLM reply → next LLM request, with a no-op tool and the checkpoint
   (goal ≤ 15 ms p50). Measured as the gap between consecutive requests of one conversation at the
   scripted server, which replies with zero latency: it includes the server's own ~1 ms.
"""
from __future__ import annotations

import os
import sys
import time

from kubernetes import client

from common import create, noop_agent, quantiles, record, stack, table, wait_done, wait_ready
from harness.localenv import LocalEnvironment

FIRST_SAMPLES = int(os.environ.get("BENCH_FIRST_SAMPLES", "20"))
STEP_RUNS, STEPS = int(os.environ.get("BENCH_STEP_RUNS", "5")), int(os.environ.get("BENCH_STEPS", "10"))


def run_task(env: LocalEnvironment, api: client.CustomObjectsApi, name: str, agent: str) -> tuple[float, list[dict]]:
    """Create a Task; return (creation time, the LLM requests of its conversation) once it completed."""
    text = f"{name} at {time.time()}"
    created = time.time()
    create(api, "tasks", "Task", name, {"agentRef": {"name": agent}, "userInput": text})
    wait_done(api, f"{name}-run")
    mine = [r for r in env.llm.requests() if len(r["messages"]) > 1 and r["messages"][1].get("content") == text]
    return created, sorted(mine, key=lambda r: r["received_at"])


def main() -> int:
    standby = os.environ.get("KUBECHAIN_STANDBY_ACTORS", "2")  # pooled actors, as deployed (kuberay/base/operator.yaml)
    with stack("bench", operator_env={"KUBECHAIN_STANDBY_ACTORS": standby}) as (env, api):
        noop_agent(api, "first", env.llm.base_url, "bench-first")
        noop_agent(api, "steps", env.llm.base_url, "bench-steps")
        env.llm.set_script("bench-first", [{"content": "done"}])
        env.llm.set_script("bench-steps", [{"tool_calls": [{"name": "noop", "arguments": {"i": 1}}]}] * STEPS
                           + [{"content": "done"}])
        wait_ready(api, ["first", "steps"])
        first = []
        for i in range(FIRST_SAMPLES):
            created, requests = run_task(env, api, f"first-{i}", "first")
            first.append(requests[0]["received_at"] - created)
        gaps = []
        for i in range(STEP_RUNS):
            _, requests = run_task(env, api, f"steps-{i}", "steps")
            assert len(requests) == STEPS + 1, len(requests)
            gaps += [b["received_at"] - a["received_at"] for a, b in zip(requests, requests[1:])]
    result = record("slice", {"standby_actors": int(standby), "task_created_to_first_llm_request_s": quantiles(first),
                              "per_step_overhead_ms": quantiles(gaps, 1000)})
    table(result, [(f"Task created → first LLM request (s), {standby} standby actors",
                    "task_created_to_first_llm_request_s", "≤ 0.6"),
                   ("per-step control overhead (ms)", "per_step_overhead_ms", "≤ 15")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
