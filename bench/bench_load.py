"""Load: bursts, concurrency, memory.

3. Memory per running TaskRun: USS of each actor's process while it waits for its LLM (goal ≤ 80 MB),
   and processes held by paused and finished runs (goal 0).
4. Spawn throughput: a burst of BURST Tasks; TaskRuns reaching Running per second.
5. BURST concurrent TaskRuns × 5 steps with 100 ms LLM latency: makespan vs the LLM-bound ideal
   (goal ≤ 1.5 × (spawn time + ideal)); all complete, none duplicated.
6. A burst of BIG Tasks in one namespace (with the default admission limits) and SMALL Tasks in another
   created after it: peak memory of the machine, and when the small namespace's runs finish.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from kubernetes import client

from common import GV, NS, noop_agent, quantiles, record, stack, table, wait_ready
from harness.localenv import LocalEnvironment

BURST = int(os.environ.get("BENCH_BURST", "100"))
BIG, SMALL = int(os.environ.get("BENCH_BIG", "300")), 5
STEPS, LATENCY = 5, 0.1


def actors(env: LocalEnvironment) -> list[dict]:
    request = urllib.request.Request(f"{env.ray.dashboard_url}/api/v0/actors?limit=10000",
                                     headers={"Authorization": f"Bearer {env.ray.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]["result"]["result"]


def uss_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


def available_mb() -> float:
    return int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemAvailable")).split()[1]) / 1024


def phases(api: client.CustomObjectsApi, namespace: str = NS) -> dict[str, str]:
    items = api.list_namespaced_custom_object(*GV, namespace, "taskruns")["items"]
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "Pending") for i in items}


def burst(api: client.CustomObjectsApi, prefix: str, agent: str, count: int, namespace: str = NS) -> float:
    started = time.monotonic()
    for i in range(count):
        api.create_namespaced_custom_object(*GV, namespace, "tasks", {
            "apiVersion": "kubechain.dev/v1alpha1", "kind": "Task", "metadata": {"name": f"{prefix}-{i}"},
            "spec": {"agentRef": {"name": agent}, "userInput": f"{prefix} {i} {time.time()}"}})
    return started


def wait_phases(api, predicate, timeout: float, namespace: str = NS) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while not predicate(seen := phases(api, namespace)):
        assert time.monotonic() < deadline, f"timed out: {sorted(set(seen.values()))}"
        time.sleep(0.2)
    return seen


def main() -> int:
    # The storage cap (1 GiB / 16 MiB per run) would hold a burst at 64: these runs are small.
    limits = {"KUBECHAIN_MAX_RUNNING": str(max(BURST, 100)), "KUBECHAIN_MAX_RUNNING_PER_NAMESPACE": str(max(BURST, 50)),
              "KUBECHAIN_MAX_RUN_STORED_BYTES": str(2 ** 30 // max(BURST, 50))}
    with stack("load", operator_env=limits) as (env, api):
        noop_agent(api, "hold", env.llm.base_url, "bench-hold")
        noop_agent(api, "steps", env.llm.base_url, "bench-steps")
        env.llm.set_script("bench-hold", [{"content": "held", "latency": 900}])  # holds its actor until cancelled
        env.llm.set_script("bench-steps", [{"tool_calls": [{"name": "noop", "arguments": {"i": i}}], "latency": LATENCY}
                                           for i in range(STEPS)] + [{"content": "done", "latency": LATENCY}])
        wait_ready(api, ["hold", "steps"])

        # 3 + 4: a burst that stays Running (its LLM answers after 60 s): spawn rate and memory per actor.
        t0 = burst(api, "hold", "hold", BURST)
        wait_phases(api, lambda p: sum(v == "Running" for k, v in p.items() if k.startswith("hold")) == BURST, 600)
        deadline = time.monotonic() + 300
        while len(alive := [a for a in actors(env) if a["state"] == "ALIVE" and a.get("pid")]) < BURST:
            assert time.monotonic() < deadline, f"{len(alive)} actors alive"
            time.sleep(0.5)
        spawn_s = time.monotonic() - t0
        while len([r for r in env.llm.requests() if r["model"] == "bench-hold"]) < BURST:  # every actor is in its loop
            time.sleep(0.2)
        memory = [uss_mb(a["pid"]) for a in alive]
        for i in range(BURST):
            api.patch_namespaced_custom_object(*GV, NS, "taskruns", f"hold-{i}-run", {"spec": {"cancel": True}})
        wait_phases(api, lambda p: all(v == "Failed" for k, v in p.items() if k.startswith("hold")), 300)
        time.sleep(3)
        held_after = len([a for a in actors(env) if a["state"] == "ALIVE"])

        # 5: BURST concurrent runs × STEPS steps at 100 ms per LLM reply.
        t0 = burst(api, "steps", "steps", BURST)
        done = wait_phases(api, lambda p: all(v in ("Completed", "Failed") for k, v in p.items() if k.startswith("steps"))
                           and sum(k.startswith("steps") for k in p) == BURST, 900)
        makespan = time.monotonic() - t0
        assert all(v == "Completed" for k, v in done.items() if k.startswith("steps")), done
        asked = {}
        for r in env.llm.requests():
            if r["model"] == "bench-steps":
                key = (r["messages"][1]["content"], len([m for m in r["messages"] if m["role"] == "assistant"]))
                asked[key] = asked.get(key, 0) + 1
        duplicated = sum(n - 1 for n in asked.values())
        ideal = (STEPS + 1) * LATENCY

        # 6: a big burst with the default limits, then a small namespace.
        big_ns = "bench-big"
        client.CoreV1Api().create_namespace({"metadata": {"name": big_ns}})
        client.CoreV1Api().create_namespace({"metadata": {"name": "bench-small"}})
        for ns in (big_ns, "bench-small"):
            for plural, kind, spec in (("llms", "LLM", {"baseURL": env.llm.base_url, "model": "bench-steps"}),
                                       ("toolsets", "ToolSet", {"tools": [{"name": "noop", "description": "no-op",
                                                                            "execution": {"builtin": {"name": "echo"}}}]}),
                                       ("agents", "Agent", {"llmRef": {"name": "a"}, "systemPrompt": "b",
                                                            "toolsetRefs": [{"name": "a"}]})):
                api.create_namespaced_custom_object(*GV, ns, plural, {"apiVersion": "kubechain.dev/v1alpha1", "kind": kind,
                                                                      "metadata": {"name": "a"}, "spec": spec})
        time.sleep(2)
        lowest_available, t0 = available_mb(), burst(api, "big", "a", BIG, big_ns)
        small_t0 = burst(api, "small", "a", SMALL, "bench-small")
        small_done = None
        while True:
            lowest_available = min(lowest_available, available_mb())
            big, small = phases(api, big_ns), phases(api, "bench-small")
            if small_done is None and len(small) == SMALL and all(v == "Completed" for v in small.values()):
                small_done = time.monotonic() - small_t0
            if len(big) == BIG and all(v in ("Completed", "Failed") for v in big.values()) and small_done:
                break
            assert time.monotonic() - t0 < 1800, "big burst did not finish"
            time.sleep(0.5)
        big_makespan = time.monotonic() - t0

    result = record("load", {
        "actor_uss_mb": quantiles(memory), "spawn_s": quantiles([spawn_s]),
        "spawn_runs_per_s": quantiles([BURST / spawn_s]), "processes_after_end": quantiles([held_after]),
        "makespan_s": quantiles([makespan]), "makespan_goal_s": quantiles([1.5 * (spawn_s + ideal)]),
        "duplicated_requests": quantiles([duplicated]),
        "big_burst_makespan_s": quantiles([big_makespan]), "small_ns_done_s": quantiles([small_done]),
        "lowest_available_mb": quantiles([lowest_available])})
    table(result, [(f"actor USS while running (MB), {BURST} actors", "actor_uss_mb", "≤ 80"),
                   (f"burst of {BURST}: all Running after (s)", "spawn_s", ""),
                   ("spawn throughput (runs/s)", "spawn_runs_per_s", ""),
                   ("actors left after the runs ended", "processes_after_end", "0"),
                   (f"{BURST} runs × {STEPS} steps @100 ms: makespan (s)", "makespan_s", "≤ goal"),
                   ("  goal: 1.5 × (spawn + ideal) (s)", "makespan_goal_s", ""),
                   ("  LLM steps asked twice", "duplicated_requests", "0"),
                   (f"burst of {BIG} (default limits): makespan (s)", "big_burst_makespan_s", ""),
                   (f"  {SMALL} runs in another namespace, after it: done in (s)", "small_ns_done_s", ""),
                   ("  lowest MemAvailable during it (MB)", "lowest_available_mb", ""),])
    return 0


if __name__ == "__main__":
    sys.exit(main())
