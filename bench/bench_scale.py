"""Issue 19's scale rows, each beside its floor measured in the same run on the deployment's shape (two operator
replicas, the webhooks on, 2 pooled actors, the default admission limits):

1. Memory: the USS of BENCH_USS_ACTORS TaskRun actors waiting on their LLM, against as many bare Ray actors (an
   async actor with one method, the same Ray, the same node): goal ≤ 1.25 ×.
2. First LLM request with pooled actors: Tasks created one at a time in a quiet cluster (the floor), against the
   same Tasks created in another namespace while the burst below runs: created → first LLM request, goal ≤ 0.2 s
   p50 under the burst. Also printed: each burst run's admission (its Running transition) → first request, and
   the apiserver's own floor: a bare PATCH of a ConfigMap, quiet and every PATCH_GAP s during the burst (a run
   writes its TaskRun a few times before its first request; no run can ask sooner than those writes land).
3. A burst of BENCH_BURST Tasks created by BENCH_CLIENTS threads as fast as they can, each STEPS no-op tool steps
   at LATENCY s per LLM reply: all Completed after (the makespan, from the first create) against the floor,
   creation time + the LLM-bound ideal. The ideal lets every run the namespace's limit admits
   (KUBECHAIN_MAX_RUNNING_PER_NAMESPACE, 50 by default) run at once with no overhead at all:
   ceil(BURST / limit) × (STEPS + 1) × LATENCY. Goal: within 1.5 ×.

The per-step row (overhead within 2.5 × a bare status PATCH of the same size) is `bench/bench_step.py`'s.
Numbers only: the exit status says whether the runs completed, not whether a goal was met.

    .venv/bin/python bench/bench_scale.py     # BENCH_BURST=1000 BENCH_CLIENTS=8 BENCH_USS_ACTORS=20
"""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time

from kubernetes import client

from bench_load import actors, phases, uss_mb
from common import API, GV, NS, ROOT, create_tasks, quantiles, record, stack
from harness.localenv import LocalEnvironment
from harness.rayhead import LocalRayHead
from kubechain.api.v1alpha1.common import parse_rfc3339

BURST, CLIENTS = int(os.environ.get("BENCH_BURST", "1000")), int(os.environ.get("BENCH_CLIENTS", "8"))
USS_ACTORS, PROBES = int(os.environ.get("BENCH_USS_ACTORS", "20")), int(os.environ.get("BENCH_PROBES", "20"))
STEPS, LATENCY = 5, 0.1
GAP = 1.0  # between two probes: "Tasks apart", and spread over the burst
PATCH_GAP = 0.5  # between two bare PATCHes of the apiserver floor
PER_NAMESPACE = int(os.environ.get("KUBECHAIN_MAX_RUNNING_PER_NAMESPACE", "50"))  # the deployment's default

# A driver holding N bare actors until its stdin closes: their pids on one line.
BARE = """
import json, os, sys, ray
ray.init(log_to_driver=False)  # stdout carries the pids only

@ray.remote(num_cpus=0)
class Bare:
    async def pid(self):
        return os.getpid()

held = [Bare.remote() for _ in range(int(sys.argv[1]))]
print("pids", json.dumps(ray.get([a.pid.remote() for a in held])), flush=True)
sys.stdin.read()
"""


def bare_uss(count: int) -> list[float]:
    """The floor of row 1: USS of `count` bare Ray actors, measured while a driver holds them. On a Ray head of
    their own, started as the stack's but without its worker preload (`actors.preload`: every worker of the stack's
    head imports our modules before it takes an actor, so an actor there is not bare)."""
    with LocalRayHead(ROOT / ".work" / "scale-floor", num_cpus=1) as head:
        driver = subprocess.Popen([sys.executable, "-c", BARE, str(count)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, **head.driver_env()})
        try:
            line = ""
            while not line.startswith("pids "):
                line = driver.stdout.readline()
                assert line, "the floor's driver exited before its actors were up"
            pids = json.loads(line.removeprefix("pids "))
            time.sleep(2)  # as our actors: settled after their first call
            return [uss_mb(pid) for pid in pids]
        finally:
            driver.stdin.close()
            driver.wait(timeout=60)


def agent(api: client.CustomObjectsApi, namespace: str, base_url: str, model: str) -> None:
    """Namespace `namespace` with LLM, ToolSet (a no-op tool) and Agent, all named `a`, on scripted model `model`."""
    client.CoreV1Api().create_namespace({"metadata": {"name": namespace}})
    for plural, kind, spec in (("llms", "LLM", {"baseURL": base_url, "model": model}),
                               ("toolsets", "ToolSet", {"tools": [{"name": "noop", "description": "no-op",
                                                                    "execution": {"builtin": {"name": "echo"}}}]}),
                               ("agents", "Agent", {"llmRef": {"name": "a"}, "systemPrompt": "b",
                                                    "toolsetRefs": [{"name": "a"}]})):
        api.create_namespaced_custom_object(*GV, namespace, plural, {"apiVersion": API, "kind": kind,
                                                                     "metadata": {"name": "a"}, "spec": spec})
    deadline = time.monotonic() + 60
    while not (api.get_namespaced_custom_object(*GV, namespace, "agents", "a").get("status") or {}).get("ready"):
        assert time.monotonic() < deadline, f"agent {namespace}/a never became ready"
        time.sleep(0.2)


def first_requests(env: LocalEnvironment, model: str) -> dict[str, float]:
    """The time of each conversation's first request to `model`, by its user input."""
    first: dict[str, float] = {}
    for request in env.llm.requests():
        if request["model"] == model and len(request["messages"]) > 1:
            text = request["messages"][1].get("content")
            first[text] = min(first.get(text, math.inf), request["received_at"])
    return first


def probe(env: LocalEnvironment, api: client.CustomObjectsApi, namespace: str, model: str, count: int,
          stop: threading.Event | None = None) -> list[float]:
    """Row 2: `count` Tasks created one at a time, GAP s after the one before ended, each one's created → first
    LLM request; stops early when `stop` is set."""
    seconds = []
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        text = f"probe {namespace} {i} {time.time()}"
        created = time.time()
        api.create_namespaced_custom_object(*GV, namespace, "tasks", {
            "apiVersion": API, "kind": "Task", "metadata": {"name": f"p{i}"},
            "spec": {"agentRef": {"name": "a"}, "userInput": text}})
        deadline = time.monotonic() + 300
        while (phase := phases(api, namespace).get(f"p{i}-run")) not in ("Completed", "Failed"):
            assert time.monotonic() < deadline, f"probe {namespace}/p{i} did not end: {phase}"
            time.sleep(0.25)  # the figure is from the LLM server's clock: polling only adds load
        seconds.append(first_requests(env, model)[text] - created)
        time.sleep(GAP)
    return seconds


def bare_patches(count: int | None = None, stop: threading.Event | None = None) -> list[float]:
    """The apiserver's floor beside row 2: seconds of each bare PATCH of one ConfigMap's data (as small as a
    status write), PATCH_GAP s apart: `count` of them, or until `stop` is set."""
    core, seconds = client.CoreV1Api(), []
    core.create_namespaced_config_map(NS, {"metadata": {"name": "floor"}, "data": {"n": "0"}})
    for i in itertools.count():
        if i == count or (stop is not None and stop.is_set()):
            break
        t0 = time.monotonic()
        core.patch_namespaced_config_map("floor", NS, {"data": {"n": str(i)}})
        seconds.append(time.monotonic() - t0)
        time.sleep(PATCH_GAP)
    core.delete_namespaced_config_map("floor", NS)
    return seconds


def admitted_to_first(env: LocalEnvironment, api: client.CustomObjectsApi, namespace: str, model: str) -> list[float]:
    """Each burst run's first Running transition → its first LLM request."""
    first = first_requests(env, model)
    seconds = []
    for run in api.list_namespaced_custom_object(*GV, namespace, "taskruns")["items"]:
        history = (run.get("status") or {}).get("phaseHistory") or []
        running = next((h["time"] for h in history if h["phase"] == "Running"), None)
        text = f"task {run['metadata']['name'].removeprefix('t').removesuffix('-run')}"
        if running is not None and text in first:
            seconds.append(first[text] - parse_rfc3339(running).timestamp())
    return seconds


def last_ended(api: client.CustomObjectsApi, namespace: str) -> float:
    """When the last of a namespace's runs reached Completed or Failed (its phaseHistory), as a Unix time."""
    return max(parse_rfc3339(h["time"]).timestamp()
               for run in api.list_namespaced_custom_object(*GV, namespace, "taskruns")["items"]
               for h in (run.get("status") or {}).get("phaseHistory") or [] if h["phase"] in ("Completed", "Failed"))


def memory(env: LocalEnvironment, api: client.CustomObjectsApi) -> tuple[list[float], list[float]]:
    """Row 1: (bare actors' USS, our waiting actors' USS), MB."""
    floor = bare_uss(USS_ACTORS)
    agent(api, "scale-hold", env.llm.base_url, "scale-hold")
    env.llm.set_script("scale-hold", [{"content": "held", "latency": 900}])  # holds its actor until cancelled
    for i in range(USS_ACTORS):
        api.create_namespaced_custom_object(*GV, "scale-hold", "tasks", {
            "apiVersion": API, "kind": "Task", "metadata": {"name": f"h{i}"},
            "spec": {"agentRef": {"name": "a"}, "userInput": f"hold {i}"}})
    deadline = time.monotonic() + 600
    while len(first_requests(env, "scale-hold")) < USS_ACTORS:  # every actor is in its loop, waiting
        assert time.monotonic() < deadline, "the holding runs never all asked their LLM"
        time.sleep(0.5)
    holding = {(r.get("status") or {}).get("actor", {}).get("name")
               for r in api.list_namespaced_custom_object(*GV, "scale-hold", "taskruns")["items"]}
    ours = [uss_mb(a["pid"]) for a in actors(env) if a["state"] == "ALIVE" and a.get("name") in holding]
    for i in range(USS_ACTORS):
        api.patch_namespaced_custom_object(*GV, "scale-hold", "taskruns", f"h{i}-run", {"spec": {"cancel": True}})
    while not all(v == "Failed" for v in phases(api, "scale-hold").values()):
        time.sleep(0.5)
    return floor, ours


def main() -> int:
    # As deployed: the pool of 2, and the default retry period (the harness's 1 s is for the tests' speed)
    deployed = {"KUBECHAIN_STANDBY_ACTORS": "2", "KUBECHAIN_PENDING_RETRY_SECONDS": "10"}
    with stack("scale", operator_env=deployed, replicas=2) as (env, api):
        floor_uss, our_uss = memory(env, api)
        print(f"actor USS: bare {quantiles(floor_uss)['p50']:.1f} MB, ours {quantiles(our_uss)['p50']:.1f} MB",
              flush=True)
        env.llm.set_script("scale-probe", [{"content": "done"}])
        agent(api, "scale-quiet", env.llm.base_url, "scale-probe")
        agent(api, "scale-probe", env.llm.base_url, "scale-probe")
        agent(api, "scale-burst", env.llm.base_url, "scale-burst")
        env.llm.set_script("scale-burst", [{"tool_calls": [{"name": "noop", "arguments": {"i": i}}], "latency": LATENCY}
                                           for i in range(STEPS)] + [{"content": "done", "latency": LATENCY}])
        quiet = probe(env, api, "scale-quiet", "scale-probe", PROBES)
        patch_quiet = bare_patches(PROBES)
        print(f"first request, quiet: p50 {quantiles(quiet)['p50']:.3f} s; a bare PATCH "
              f"{quantiles(patch_quiet)['p50']:.3f} s", flush=True)

        stop, under_burst, patch_burst = threading.Event(), [], []
        prober = threading.Thread(target=lambda: under_burst.extend(
            probe(env, api, "scale-probe", "scale-probe", PROBES, stop)))
        patcher = threading.Thread(target=lambda: patch_burst.extend(bare_patches(stop=stop)))
        t0, started = time.monotonic(), time.time()
        prober.start()
        patcher.start()
        created_s, _ = create_tasks(str(env.kubeconfig), "scale-burst", "a", BURST, CLIENTS)
        ended = {}
        while time.monotonic() - t0 < 3600:
            ended = phases(api, "scale-burst")
            if len(ended) == BURST and all(v in ("Completed", "Failed") for v in ended.values()):
                break
            time.sleep(5)  # a LIST of the whole burst: the makespan comes from the runs' own transitions
        makespan = last_ended(api, "scale-burst") - started
        stop.set()
        prober.join()
        patcher.join()
        admitted = admitted_to_first(env, api, "scale-burst", "scale-burst")
        completed = sum(v == "Completed" for v in ended.values())
    ideal = math.ceil(BURST / PER_NAMESPACE) * (STEPS + 1) * LATENCY
    report(floor_uss, our_uss, quiet, under_burst, patch_quiet, patch_burst, admitted, created_s, ideal, makespan,
           completed)
    return 0 if completed == BURST else 1


def report(floor_uss, our_uss, quiet, under_burst, patch_quiet, patch_burst, admitted, created_s, ideal, makespan,
           completed) -> None:
    floor_bound = created_s + ideal
    result = record("scale", {
        "bare_actor_uss_mb": quantiles(floor_uss), "actor_uss_mb": quantiles(our_uss),
        "first_request_quiet_s": quantiles(quiet), "first_request_under_burst_s": quantiles(under_burst),
        "bare_patch_quiet_s": quantiles(patch_quiet), "bare_patch_under_burst_s": quantiles(patch_burst),
        "admitted_to_first_request_s": quantiles(admitted), "burst": BURST, "clients": CLIENTS,
        "created_s": created_s, "ideal_s": ideal, "makespan_s": makespan, "completed": completed})
    print(f"\nkubechain bench scale — {result['date']} — {result['machine']}")
    print(f"2 replicas, webhooks on, 2 pooled actors, default limits; a burst of {BURST} Tasks by {CLIENTS} clients, "
          f"{STEPS} steps at {LATENCY * 1000:.0f} ms each")
    print(f"{'metric':<58}{'floor':>9}{'ours':>9}{'ratio':>8}{'goal':>9}")
    rows = [("actor USS, p50 (MB): a bare Ray actor | ours", quantiles(floor_uss)["p50"], quantiles(our_uss)["p50"],
             "≤ 1.25×"),
            ("first LLM request, p50 (s): quiet | under the burst", quantiles(quiet)["p50"],
             quantiles(under_burst)["p50"], "≤ 0.2 s"),
            ("first LLM request, p90 (s): quiet | under the burst", quantiles(quiet)["p90"],
             quantiles(under_burst)["p90"], ""),
            ("apiserver floor: a bare PATCH, p50 (s): quiet | burst", quantiles(patch_quiet)["p50"],
             quantiles(patch_burst)["p50"], ""),
            ("apiserver floor: a bare PATCH, p90 (s): quiet | burst", quantiles(patch_quiet)["p90"],
             quantiles(patch_burst)["p90"], ""),
            ("burst: creation + ideal | all ended (s)", floor_bound, makespan, "≤ 1.5×")]
    for label, floor, ours, goal in rows:
        print(f"{label:<58}{floor:>9.3f}{ours:>9.3f}{ours / floor:>8.2f}{goal:>9}")
    print(f"  creation {created_s:.1f} s ({BURST / created_s:.1f} creates/s), ideal {ideal:.1f} s, "
          f"{completed}/{BURST} Completed")
    print(f"  burst runs, admitted → first LLM request: p50 {quantiles(admitted)['p50']:.3f} s, "
          f"p90 {quantiles(admitted)['p90']:.3f} s")


if __name__ == "__main__":
    sys.exit(main())
