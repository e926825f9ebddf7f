"""Recovery benchmarks.

1. Actor SIGKILL → the next LLM request from its replacement (goal ≤ 2 s p50). Each sample: a run
   whose LLM replies take 0.5 s; when it asks step 2, its actor's worker process is SIGKILLed; the
   clock stops when the LLM server receives step 2 again, from the fresh actor.
2. Ray head killed and restarted with HEAD_RUNS Running TaskRuns: the time from the head answering
   again until every run has sent a new LLM request.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request

from kubernetes import client

from common import create, noop_agent, quantiles, record, stack, table, taskrun_status, wait_done, wait_ready
from harness.localenv import LocalEnvironment

KILLS = int(os.environ.get("BENCH_KILLS", "10"))
HEAD_RUNS = int(os.environ.get("BENCH_HEAD_RUNS", "20"))


def actor_pid(env: LocalEnvironment, name: str) -> int:
    request = urllib.request.Request(f"{env.ray.dashboard_url}/api/v0/actors?limit=10000",
                                     headers={"Authorization": f"Bearer {env.ray.token}"})
    while True:
        with urllib.request.urlopen(request, timeout=10) as response:
            alive = [a for a in json.load(response)["data"]["result"]["result"]
                     if a.get("name") == name and a["state"] == "ALIVE" and a.get("pid")]
        if alive:
            return alive[0]["pid"]
        time.sleep(0.05)


def mine(env: LocalEnvironment, text: str) -> list[dict]:
    """The LLM requests of the conversation started by `text`."""
    return [r for r in env.llm.requests() if len(r["messages"]) > 1 and r["messages"][1].get("content") == text]


def asked(env: LocalEnvironment, text: str, step: int) -> list[dict]:
    return [r for r in mine(env, text) if r["step"] == step]


def head_restart(env: LocalEnvironment, api: client.CustomObjectsApi) -> dict[str, float]:
    noop_agent(api, "slow", env.llm.base_url, "bench-slow")
    env.llm.set_script("bench-slow", [{"tool_calls": [{"name": "noop", "arguments": {}}], "latency": 1.0}] * 60
                       + [{"content": "done"}])
    wait_ready(api, ["slow"])
    texts = [f"head {i}" for i in range(HEAD_RUNS)]
    for i, text in enumerate(texts):
        create(api, "tasks", "Task", f"h{i}", {"agentRef": {"name": "slow"}, "userInput": text})
    while not all(asked(env, text, 1) for text in texts):  # every run is well under way
        time.sleep(0.1)
    env.ray.kill_head()
    time.sleep(3)
    cutoff = time.time()
    env.ray.start()
    back = time.time()
    while not all(r["received_at"] > back for r in (last_request(env, t) for t in texts)):
        time.sleep(0.1)
    progressed = max(first_request_after(env, t, cutoff)["received_at"] for t in texts) - back
    return {"p50": progressed, "p90": progressed, "n": 1}


def last_request(env: LocalEnvironment, text: str) -> dict:
    return mine(env, text)[-1]


def first_request_after(env: LocalEnvironment, text: str, when: float) -> dict:
    return next(r for r in mine(env, text) if r["received_at"] > when)


def main() -> int:
    with stack("bench-recovery") as (env, api):
        noop_agent(api, "victim", env.llm.base_url, "bench-recovery")
        env.llm.set_script("bench-recovery", [{"tool_calls": [{"name": "noop", "arguments": {}}], "latency": 0.5}] * 3
                           + [{"content": "done", "latency": 0.5}])
        wait_ready(api, ["victim"])
        samples = []
        for i in range(KILLS):
            text = f"recovery {i}"
            create(api, "tasks", "Task", f"r{i}", {"agentRef": {"name": "victim"}, "userInput": text})
            while not taskrun_status(api, f"r{i}-run").get("actor", {}).get("id"):
                time.sleep(0.02)
            pid = actor_pid(env, taskrun_status(api, f"r{i}-run")["actor"]["name"])
            while not asked(env, text, 2):
                time.sleep(0.005)
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            while len(asked(env, text, 2)) < 2:
                time.sleep(0.005)
            samples.append(asked(env, text, 2)[1]["received_at"] - killed)
            wait_done(api, f"r{i}-run")
        head = head_restart(env, api)
    result = record("recovery", {"actor_sigkill_to_next_llm_request_s": quantiles(samples),
                                 "head_back_to_all_runs_progressing_s": head})
    table(result, [("actor SIGKILL → next LLM request (s)", "actor_sigkill_to_next_llm_request_s", "≤ 2"),
                   (f"Ray head back → all {HEAD_RUNS} runs progressing (s)", "head_back_to_all_runs_progressing_s", "")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
