"""RUNS running runs through a provider outage of OUTAGE_S (issue 16): processes held during it (goal: none beyond
the pool), requests each run sent during it, time from its end to every run progressing again, and to all done.

Every run is STEPS no-op tool steps, each LLM reply taking LATENCY s, then an answer: long enough that all RUNS
are mid-conversation (Running, step 0 answered, none finished) when the scripted server starts answering every
request 503 (`ScriptedLLMServer.set_outage`, no Retry-After unless BENCH_OUTAGE_RETRY_AFTER). The LLM's
retry.maxBackoffSeconds is MAX_BACKOFF (30 s here, 120 s by default): a run asleep in back-off wakes at its
retryAt, at most that long after the outage ended: a floor of the recovery time; starting the runs' actors is
another (it took `all mid-conversation` before the outage). During the outage every SAMPLE_S: the processes held
(the Ray head's worker processes, from /proc: actors, pooled ones included, and workers being started for them;
the floor is the count before the runs), Ray's actor states, and the runs' status.llmRetry. After it, from the
server's request log: the 503s per conversation, each run's first 200 after the end, and each (conversation,
step) answered exactly once.

    .venv/bin/python bench/bench_outage.py      # BENCH_OUTAGE_SECONDS=300 BENCH_OUTAGE_RUNS=100 by default
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from kubernetes import client

from bench_load import burst, phases
from common import GV, NS, noop_agent, quantiles, record, stack, table, wait_ready
from harness.localenv import LocalEnvironment
from kubechain.api.v1alpha1.common import parse_rfc3339
from kubechain.demo.llm_server import MAX_RECORDED_REQUESTS

RUNS = int(os.environ.get("BENCH_OUTAGE_RUNS", "100"))
OUTAGE_S = float(os.environ.get("BENCH_OUTAGE_SECONDS", "300"))
RETRY_AFTER = os.environ.get("BENCH_OUTAGE_RETRY_AFTER")  # seconds, as the provider would say it
MAX_BACKOFF = float(os.environ.get("BENCH_MAX_BACKOFF", "30"))
STEPS, LATENCY = int(os.environ.get("BENCH_OUTAGE_STEPS", "15")), float(os.environ.get("BENCH_STEP_LATENCY", "20"))
POOL = int(os.environ.get("KUBECHAIN_STANDBY_ACTORS", "2"))  # as deployed (kuberay/base/operator.yaml)
SAMPLE_S = 5.0
# Processes are held by design early in the outage: a request in flight when it began (up to LATENCY), then
# back-offs short enough to sleep through (1 + 2 + 4 + 5 s ≤ actors/retries.HOLD_SECONDS each, with jitter).
SETTLE_S = LATENCY + 20
MODEL = "bench-outage"


def actors(env: LocalEnvironment, state: str | None = None, predicate: str = "=") -> list[dict]:
    """Ray's actors (state API), all or those whose state is (predicate "=") or is not ("!=") `state`."""
    query = {"limit": "10000", **({"filter_keys": "state", "filter_predicates": predicate, "filter_values": state}
                                  if state else {})}
    request = urllib.request.Request(f"{env.ray.dashboard_url}/api/v0/actors?{urllib.parse.urlencode(query)}",
                                     headers={"Authorization": f"Bearer {env.ray.token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["data"]["result"]["result"]


def workers(env: LocalEnvironment) -> Counter:
    """The Ray worker processes of this stack's head (its session: the head runs in its own), by what they are:
    "actor" (a TaskRun actor's, pooled ones included) or "idle" (started and not an actor yet, or kept by Ray)."""
    found: Counter = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip()
            session = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if session == env.ray.proc.pid and title.startswith(("ray::IDLE", "ray::TaskRunActor")):
            found["actor" if title.startswith("ray::TaskRunActor") else "idle"] += 1
    return found


def conversations(env: LocalEnvironment) -> dict[str, list[dict]]:
    """The LLM requests of each run, by its user input, in arrival order."""
    mine: dict[str, list[dict]] = {}
    for r in env.llm.requests():
        if r["model"] == MODEL and len(r["messages"]) > 1:
            mine.setdefault(r["messages"][1]["content"], []).append(r)
    return mine


def taskruns(api: client.CustomObjectsApi) -> dict[str, dict]:
    """The runs' statuses by the user input's number (Task o-<i>)."""
    items = api.list_namespaced_custom_object(*GV, NS, "taskruns")["items"]
    return {i["metadata"]["name"].split("-")[1]: i.get("status") or {} for i in items}


def policy_attempts(seconds: float, initial: float = 1.0) -> int:
    """Attempts in `seconds` of failures by the retry policy alone: mean jitter (0.75 of the back-off), no cost."""
    attempts, t = 0, 0.0
    while t < seconds:
        attempts += 1
        t += 0.75 * min(MAX_BACKOFF, initial * 2 ** (attempts - 1))
    return attempts


def sample(env: LocalEnvironment, api: client.CustomObjectsApi, t: float) -> dict:
    processes = workers(env)
    try:
        states = Counter(a["state"] for a in actors(env, "DEAD", "!="))
    except OSError as exc:  # a busy dashboard: this sample has no actor states
        print(f"  actors not listed: {exc}", flush=True)
        states = Counter()
    runs = taskruns(api).values()
    retries = [s["llmRetry"] for s in runs if s.get("llmRetry")]
    return {"t": round(t, 1), "processes": processes.total(), "actor_processes": processes["actor"],
            "alive": states["ALIVE"], "pending": states["PENDING_CREATION"], "backing_off": len(retries),
            "with_actor": sum(bool(s.get("actor")) for s in runs),
            "attempts_max": max((r["attempts"] for r in retries), default=0)}


def main() -> int:
    limits = {"KUBECHAIN_STANDBY_ACTORS": str(POOL), "KUBECHAIN_MAX_RUNNING": str(max(RUNS, 100)),
              "KUBECHAIN_MAX_RUNNING_PER_NAMESPACE": str(max(RUNS, 50)),  # all RUNS Running at once
              "KUBECHAIN_MAX_RUN_STORED_BYTES": str(2 ** 30 // max(RUNS, 50))}  # the storage cap too
    with stack("outage", operator_env=limits) as (env, api):
        noop_agent(api, "a", env.llm.base_url, MODEL, retry={"maxBackoffSeconds": MAX_BACKOFF})
        env.llm.set_script(MODEL, [{"tool_calls": [{"name": "noop", "arguments": {"i": i}}], "latency": LATENCY}
                                   for i in range(STEPS)] + [{"content": "done"}])
        wait_ready(api, ["a"])
        time.sleep(3)  # the pool is full
        idle = workers(env).total()  # held with no run: the pool and the workers Ray keeps
        t0 = burst(api, "o", "a", RUNS)  # user inputs "o <i> <time>": one conversation each
        while (answered := sum(any(r["status"] == 200 for r in rs) for rs in conversations(env).values())) < RUNS:
            assert time.monotonic() - t0 < 1800, f"only {answered} runs answered once"
            time.sleep(2)
        running_s = time.monotonic() - t0
        before = Counter(phases(api).values())
        assert before["Running"] == RUNS, f"not all mid-conversation: {before}"
        started_before = len(actors(env))
        outage = {"status": 503, "seconds": OUTAGE_S, **({"retry_after": RETRY_AFTER} if RETRY_AFTER else {})}
        until = env.llm.set_outage(outage)
        start = until - OUTAGE_S
        print(f"{RUNS} runs mid-conversation after {running_s:.0f} s; outage of {OUTAGE_S:.0f} s begins", flush=True)
        samples, printed = [], time.time()
        while (now := time.time()) < until:
            samples.append(sample(env, api, now - start))
            if now - printed > 30:
                printed = now
                print(f"  {samples[-1]}", flush=True)
            time.sleep(max(0.0, min(SAMPLE_S - (time.time() - now), until - time.time())))
        scheduled = {i: max(0.0, parse_rfc3339(s["llmRetry"]["retryAt"]).timestamp() - until)  # by its own status
                     for i, s in taskruns(api).items() if s.get("llmRetry")}  # when each run asks again
        started_during = len(actors(env)) - started_before
        last = max(scheduled.values(), default=0.0)
        print(f"outage over; {len(scheduled)} runs backing off, the last due {last:.1f} s later", flush=True)
        while not {"Completed", "Failed"} >= set((done := phases(api)).values()):
            assert time.time() - until < max(900, 3 * STEPS * LATENCY), f"runs did not end: {Counter(done.values())}"
            time.sleep(1)
        completed_s = time.time() - until
        convs = conversations(env)
        warned = Counter(e.involved_object.name for e in client.CoreV1Api().list_namespaced_event(NS).items
                         for _ in range(e.count or 1) if e.reason in ("ServerError", "RateLimited", "Unreachable"))
        assert len(env.llm.requests()) < MAX_RECORDED_REQUESTS, "the server's request log overflowed"

    during = [sum(r["status"] == 503 and start <= r["received_at"] < until for r in rs) for rs in convs.values()]
    back = [min((r["received_at"] for r in rs if r["status"] == 200 and r["received_at"] >= until), default=math.inf)
            - until for rs in convs.values()]  # inf: it never asked successfully again
    # the least a run could take after the end: wake at its retryAt, then the rest of its script (the answer: 0 s)
    rest = [scheduled.get(c.split()[1], 0.0) + LATENCY * (STEPS - sum(r["status"] == 200 and r["received_at"] < until
                                                                     for r in rs)) for c, rs in convs.items()]
    answers = Counter((c, r["step"]) for c, rs in convs.items() for r in rs if r["status"] == 200)
    settled = [s for s in samples if s["t"] >= SETTLE_S]
    result = record("outage", {
        "runs": RUNS, "standby_actors": POOL, "outage_s": OUTAGE_S, "max_backoff_s": MAX_BACKOFF, "steps": STEPS,
        "step_latency_s": LATENCY, "retry_after": RETRY_AFTER, "all_running_s": quantiles([running_s]),
        "processes": quantiles([s["processes"] for s in settled]),
        "processes_max": quantiles([max(s["processes"] for s in settled)]),
        "actors_pending": quantiles([s["pending"] for s in settled]), "processes_floor": quantiles([idle]),
        "processes_early_max": quantiles([max(s["processes"] for s in samples if s["t"] < SETTLE_S)]),
        "actors_started_during": quantiles([started_during]),
        "requests_per_run": quantiles(during), "requests_per_run_max": quantiles([max(during)]),
        "requests_policy": quantiles([policy_attempts(OUTAGE_S)]),
        "end_to_progress_s": quantiles(back), "end_to_all_progressing_s": quantiles([max(back)]),
        "progress_floor_s": quantiles([last]), "end_to_all_ended_s": quantiles([completed_s]),
        "progress_floor_start_s": quantiles([running_s]),
        "completed_floor_s": quantiles([max(rest)]),
        "completed": quantiles([sum(p == "Completed" for p in done.values())]),
        "answered_twice": quantiles([sum(n - 1 for n in answers.values())]),
        "outage_events_per_run": quantiles([warned[f"o-{c.split()[1]}-run"] for c in convs]), "samples": samples})
    table(result, [
        (f"{RUNS} runs, {POOL} pooled actors: all mid-conversation after (s)", "all_running_s", ""),
        (f"worker processes in the {OUTAGE_S:.0f} s outage, after {SETTLE_S:.0f} s", "processes", f"≤ {idle}"),
        ("  max", "processes_max", f"≤ {idle}"),
        ("  floor: before the runs (pool, Ray's idle workers)", "processes_floor", ""),
        ("  actors being started (Ray: PENDING_CREATION)", "actors_pending", ""),
        (f"  max in the first {SETTLE_S:.0f} s (in flight, short back-offs)", "processes_early_max", ""),
        ("  actor processes started during the outage", "actors_started_during", ""),
        ("requests per run during the outage", "requests_per_run", ""),
        ("  max", "requests_per_run_max", ""),
        ("  the retry policy alone (mean jitter, no start-up)", "requests_policy", ""),
        ("end of outage → a run's next answered request (s)", "end_to_progress_s", ""),
        ("end of outage → all runs progressing (s)", "end_to_all_progressing_s", ""),
        (f"  floor: the last retryAt (≤ maxBackoff {MAX_BACKOFF:.0f} s)", "progress_floor_s", ""),
        ("  floor: starting the actors (first row)", "progress_floor_start_s", ""),
        ("end of outage → all runs ended (s)", "end_to_all_ended_s", ""),
        (f"  floor: retryAt + the rest of the script ({LATENCY:.0f} s/step)", "completed_floor_s", ""),
        ("runs Completed", "completed", f"{RUNS}"),
        ("LLM steps answered twice", "answered_twice", "0"),
        ("Warning Events per run for the outage", "outage_events_per_run", "1")])
    ok = result["completed"]["p50"] == RUNS and result["answered_twice"]["p50"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
