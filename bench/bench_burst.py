"""A burst of BIG Tasks in one namespace, then SMALL Tasks in another, on the deployment's settings (default
admission limits, 2 pooled actors): does the machine stay out of OOM, how soon does the small namespace get
its answers, how long does the burst take, and how many actor processes did it start.

Every run is STEPS no-op tool steps with LATENCY s LLM replies. Prints progress every 30 s; a burst still
unfinished after BENCH_BOUND_S is recorded as such (with how far it got), not raised.

    .venv/bin/python bench/bench_burst.py          # BENCH_BIG=1000 by default
"""
from __future__ import annotations

import os
import sys
import time

from kubernetes import client

from bench_load import STEPS, LATENCY, actors, available_mb, burst, phases
from common import GV, quantiles, record, stack, table

BIG, SMALL = int(os.environ.get("BENCH_BIG", "1000")), 5
BOUND_S = float(os.environ.get("BENCH_BOUND_S", "3600"))
POOL = os.environ.get("KUBECHAIN_STANDBY_ACTORS", "2")  # as deployed (kuberay/base/operator.yaml)


def agent_in(api: client.CustomObjectsApi, namespace: str, base_url: str) -> None:
    client.CoreV1Api().create_namespace({"metadata": {"name": namespace}})
    for plural, kind, spec in (("llms", "LLM", {"baseURL": base_url, "model": "bench-burst"}),
                               ("toolsets", "ToolSet", {"tools": [{"name": "noop", "description": "no-op",
                                                                    "execution": {"builtin": {"name": "echo"}}}]}),
                               ("agents", "Agent", {"llmRef": {"name": "a"}, "systemPrompt": "b",
                                                    "toolsetRefs": [{"name": "a"}]})):
        api.create_namespaced_custom_object(*GV, namespace, plural, {"apiVersion": "kubechain.dev/v1alpha1",
                                                                     "kind": kind, "metadata": {"name": "a"}, "spec": spec})


def main() -> int:
    with stack("burst", operator_env={"KUBECHAIN_STANDBY_ACTORS": POOL}) as (env, api):
        env.llm.set_script("bench-burst", [{"tool_calls": [{"name": "noop", "arguments": {"i": i}}], "latency": LATENCY}
                                           for i in range(STEPS)] + [{"content": "done", "latency": LATENCY}])
        agent_in(api, "bench-big", env.llm.base_url)
        agent_in(api, "bench-small", env.llm.base_url)
        time.sleep(3)  # agents ready
        lowest, t0 = available_mb(), burst(api, "big", "a", BIG, "bench-big")
        created_s = time.monotonic() - t0
        small_t0 = burst(api, "small", "a", SMALL, "bench-small")
        small_done = finished = None
        progress = time.monotonic()
        while time.monotonic() - t0 < BOUND_S:
            lowest = min(lowest, available_mb())
            big, small = phases(api, "bench-big"), phases(api, "bench-small")
            if small_done is None and len(small) == SMALL and all(v == "Completed" for v in small.values()):
                small_done = time.monotonic() - small_t0
            ended = sum(v in ("Completed", "Failed") for v in big.values())
            if time.monotonic() - progress > 30:
                progress = time.monotonic()
                print(f"{progress - t0:7.0f} s: {ended}/{BIG} ended, {sum(v == 'Running' for v in big.values())} "
                      f"running, small done: {small_done}, MemAvailable {available_mb():.0f} MB", flush=True)
            if ended == BIG and small_done is not None:
                finished = time.monotonic() - t0
                break
            time.sleep(1)
        big = phases(api, "bench-big")
        completed = sum(v == "Completed" for v in big.values())
        started = len(actors(env))  # TaskRun actors are the only actors here; the dead ones are listed too

    result = record("burst", {
        "standby_actors": int(POOL), "big": BIG, "small": SMALL, "created_s": quantiles([created_s]),
        "makespan_s": quantiles([finished if finished is not None else float("nan")]),
        "completed": quantiles([completed]), "small_ns_done_s": quantiles([small_done or float("nan")]),
        "actor_processes_started": quantiles([started]), "lowest_available_mb": quantiles([lowest])})
    table(result, [(f"burst of {BIG}: all ended after (s)", "makespan_s", ""),
                   ("  of which Completed", "completed", f"{BIG}"),
                   (f"  {SMALL} runs in another namespace, after it: done in (s)", "small_ns_done_s", ""),
                   ("  actor processes started", "actor_processes_started", ""),
                   ("  lowest MemAvailable (MB)", "lowest_available_mb", "no OOM")])
    return 0 if finished is not None and completed == BIG else 1


if __name__ == "__main__":
    sys.exit(main())
