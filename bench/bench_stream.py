"""Streaming (issue 20): how long a token takes from leaving the LLM server to being printed by `kubechain follow`,
and the apiserver writes per step with streaming on and off (streaming must add none).

- Latency: a 500-token answer ("t0001 t0002 ...", one token per chunk, BENCH_STREAM_DELAY s apart) streamed by the
  scripted server; each chunk's send time is in the server's request log, each token's print time is when the
  follower's stdout delivered it to this process. The floor: the same answer read straight from the server's SSE
  by a minimal client process printing each token (a client talking to the model itself). Figure / floor: ratio.
- Writes: BENCH_STREAM_STEPS no-op tool steps then an answer, once streamed and once with a model that refuses
  streaming (whole messages); every MODIFIED event of the TaskRun while its steps ran (all writers: the actor's
  checkpoints and the operator's own), per step.
No timed assertions: it prints and records.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from kubernetes import client, watch

from common import GV, NS, create, noop_agent, record, stack, wait_done, wait_ready

TOKENS = int(os.environ.get("BENCH_STREAM_TOKENS", "500"))
DELAY = float(os.environ.get("BENCH_STREAM_DELAY", "0.01"))
STEPS = int(os.environ.get("BENCH_STREAM_STEPS", "10"))
ANSWER = " ".join(f"t{i:04d}" for i in range(1, TOKENS + 1))
FLOOR_CLIENT = r'''
import json, sys, urllib.request
body = json.dumps({"model": sys.argv[2], "messages": [{"role": "user", "content": "go"}], "stream": True}).encode()
request = urllib.request.Request(sys.argv[1] + "/chat/completions", body, {"Content-Type": "application/json",
                                                                             "Authorization": "Bearer x"})
for line in urllib.request.urlopen(request):
    if line.startswith(b"data: {"):
        for choice in json.loads(line[6:])["choices"]:
            sys.stdout.write(choice["delta"].get("content") or "")
            sys.stdout.flush()
'''


def printed_at(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """When each token first reached us on the command's stdout."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    seen: dict[str, float] = {}
    text = ""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        at = time.time()
        start = max(0, len(text) - 6)
        text += chunk.decode(errors="replace")
        for word in text[start:].replace("\n", " ").split(" "):
            if len(word) == 5 and word.startswith("t") and word[1:].isdigit():
                seen.setdefault(word, at)
    proc.wait(60)
    return seen


def latencies(sent: list[float], seen: dict[str, float]) -> list[float]:
    """Chunk 0 carries the role; chunk i carries token i (its trailing space: the next chunk's)."""
    return [seen[f"t{i:04d}"] - sent[i] for i in range(1, TOKENS + 1) if f"t{i:04d}" in seen and i < len(sent)]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def modified_during(api: client.CustomObjectsApi, name: str, start: callable) -> int:
    """MODIFIED events of TaskRun `name` from `start()` until it ends."""
    count, stream = 0, watch.Watch()
    threading.Thread(target=start, daemon=True).start()
    for event in stream.stream(api.list_namespaced_custom_object, *GV, NS, "taskruns",
                               field_selector=f"metadata.name={name}", timeout_seconds=300):
        count += event["type"] == "MODIFIED"
        if ((event["object"].get("status") or {}).get("phase")) in ("Completed", "Failed"):
            stream.stop()
    return count


def main() -> int:
    with stack("bench-stream") as (env, api):
        # The server waits 3 s before it streams: the follower process (imports, first reads) is connected by then,
        # so what is measured is the path, not the CLI's start-up.
        models = {"streamed": [{"content": ANSWER, "stream_chunk": 6, "stream_delay": DELAY, "latency": 3}]}
        for mode, refuse in (("on", []), ("off", ["stream"])):
            models[f"steps-{mode}"] = [{"tool_calls": [{"name": "noop", "arguments": {"text": "x"}}], "refuse": refuse}
                                       for _ in range(STEPS)] + [{"content": "done", "refuse": refuse}]
        for model, steps in models.items():
            env.llm.set_script(model, steps)
            noop_agent(api, model, env.llm.base_url, model)
        wait_ready(api, list(models))

        cli_env = {**os.environ, "KUBECONFIG": str(env.kubeconfig), "KUBECHAIN_STREAM_URL": env.stream_url}
        create(api, "taskruns", "TaskRun", "warm", {"agentRef": {"name": "streamed"}, "userInput": "go"})
        wait_done(api, "warm", timeout=300)  # the first actor's cold start is not what is measured
        figure: list[float] = []
        runs: list[dict[str, float]] = []
        for attempt in range(3):
            name = f"latency-{attempt}"
            create(api, "taskruns", "TaskRun", name, {"agentRef": {"name": "streamed"}, "userInput": "go"})
            seen = printed_at([sys.executable, "-m", "kubechain.clients.cli", "follow", name, "-n", NS], cli_env)
            sent = [r for r in env.llm.requests() if r["model"] == "streamed"][-1]["chunk_times"]
            these = latencies(sent, seen)
            runs.append({"p50_ms": statistics.median(these) * 1000, "p99_ms": quantile(these, 0.99) * 1000})
            figure += these
        floor: list[float] = []
        for _ in range(3):
            before = len(env.llm.requests())
            seen = printed_at([sys.executable, "-c", FLOOR_CLIENT, env.llm.base_url, "streamed"], dict(os.environ))
            sent = env.llm.requests()[before]["chunk_times"]
            floor += latencies(sent, seen)

        writes = {}
        for mode in ("on", "off"):
            name = f"writes-{mode}"
            events = modified_during(api, name, lambda: create(api, "taskruns", "TaskRun", name, {
                "agentRef": {"name": f"steps-{mode}"}, "userInput": "go"}))
            status = wait_done(api, name, timeout=300)
            writes[mode] = {"modified_events": events, "steps": status["step"],
                            "per_step": events / status["step"]}

    metrics: dict[str, Any] = {
        "tokens": TOKENS, "chunk_delay_s": DELAY,
        "cli_ms": {"p50": statistics.median(figure) * 1000, "p99": quantile(figure, 0.99) * 1000, "n": len(figure)},
        "floor_ms": {"p50": statistics.median(floor) * 1000, "p99": quantile(floor, 0.99) * 1000, "n": len(floor)},
        "writes": writes, "runs": runs,
    }
    metrics["ratio_p50"] = metrics["cli_ms"]["p50"] / metrics["floor_ms"]["p50"]
    metrics["ratio_p99"] = metrics["cli_ms"]["p99"] / metrics["floor_ms"]["p99"]
    record("bench_stream", metrics)
    f, c = metrics["floor_ms"], metrics["cli_ms"]
    print("token leaves the LLM server -> printed        p50 ms   p99 ms      n")
    print(f"  floor (a client reading the server's SSE)  {f['p50']:7.2f}  {f['p99']:7.2f}  {f['n']:5d}")
    print(f"  kubechain follow (actor, operator, CLI)    {c['p50']:7.2f}  {c['p99']:7.2f}  {c['n']:5d}")
    print(f"  ratio                                      {metrics['ratio_p50']:7.2f}  {metrics['ratio_p99']:7.2f}")
    print("  per run (p50 / p99 ms): " + ", ".join(f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}" for r in runs))
    print(f"TaskRun writes per step (MODIFIED events, all writers): streaming on {writes['on']['per_step']:.2f}"
          f" ({writes['on']['modified_events']} / {writes['on']['steps']}), off {writes['off']['per_step']:.2f}"
          f" ({writes['off']['modified_events']} / {writes['off']['steps']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
