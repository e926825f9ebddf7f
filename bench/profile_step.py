"""Profile the actor's per-step path without Ray: the real AgentLoop, the real checkpoint store against a local
kube-apiserver, the real LLM client against the scripted LLM server (in its own process, as for an actor: in this
one it would contend for the GIL), a no-op tool. Prints the time per step, the LLM request's and the checkpoint's
share, and the top functions by cumulative time (cProfile), so a regression of the hot path shows where it comes from.

    .venv/bin/python bench/profile_step.py [STEPS] [--no-profile]
"""
from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
from datetime import datetime, timezone
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common import ROOT

from harness.controlplane import LocalControlPlane
from harness.localenv import install_crds, kubectl

STEPS = int(next((a for a in sys.argv[1:] if a.isdigit()), "200"))
PROFILE = "--no-profile" not in sys.argv
TIMES: dict[str, list[float]] = {}


async def run_loop(steps: int) -> None:
    from actors.checkpoint import KubeCheckpointStore
    from actors.llm import OpenAIChatClient
    from actors.loop import AgentLoop
    from actors.telemetry import RunTelemetry
    from actors.tools.executor import LocalToolExecutor
    from kubechain.api.runspec import ResolvedTool, RunSpec, TaskRunRef
    from kubechain.api.v1alpha1 import LLMSpec, Phase, ToolExecution
    from kubechain.core.lifecycle import enter

    uid = kubectl(KUBECONFIG, "-n", "default", "get", "taskrun", "p", "-o", "jsonpath={.metadata.uid}").stdout
    echo = ResolvedTool(name="noop", description="no-op", parameters={"type": "object", "properties": {}},
                        execution=ToolExecution.model_validate({"builtin": {"name": "echo"}}))
    spec = RunSpec(taskrun=TaskRunRef(namespace="default", name="p", uid=uid), agent="a", epoch=0,
                   llm=LLMSpec(model="profile", base_url=LLM_URL), system_prompt="s", user_input="u",
                   tools=[echo], max_turns=steps + 5)
    store = KubeCheckpointStore(spec.taskrun, spec.epoch)
    status = enter(await store.load(), Phase.RUNNING, "Profile", now=datetime.now(timezone.utc))
    llm = OpenAIChatClient(spec.llm, None)
    store.save, llm.complete = timed("checkpoint", store.save), timed("LLM request", llm.complete)
    try:
        await AgentLoop(spec, llm, LocalToolExecutor(spec.tools), store, RunTelemetry()).run(status)
    finally:
        await llm.close()
        await store._rest.close()


def timed(name: str, call):
    """`call`, recording how long each call takes in TIMES[name]."""
    async def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            TIMES.setdefault(name, []).append(time.perf_counter() - started)
    return wrapper


@contextmanager
def llm_server(workdir: Path, script: list[dict]) -> Iterator[str]:
    """The scripted LLM server's base URL, serving `script` as model `profile`."""
    (workdir / "script.json").write_text(json.dumps(script))
    server = subprocess.Popen([sys.executable, "-m", "kubechain.demo.llm_server", "--port", "0",
                               "--script", f"profile={workdir / 'script.json'}"], stdout=subprocess.PIPE, text=True)
    try:
        yield server.stdout.readline().split()[-1]  # "listening on http://127.0.0.1:PORT/v1"
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    global KUBECONFIG, LLM_URL
    workdir = ROOT / ".work" / "profile"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    script = [{"tool_calls": [{"name": "noop", "arguments": {"i": 1}}]}] * STEPS + [{"content": "done"}]
    with LocalControlPlane(workdir / "k8s") as cp, llm_server(workdir, script) as LLM_URL:
        KUBECONFIG = cp.kubeconfig
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        install_crds(cp.kubeconfig)
        kubectl(cp.kubeconfig, "-n", "default", "apply", "-f", "-", input=(
            "apiVersion: kubechain.dev/v1alpha1\nkind: TaskRun\nmetadata: {name: p}\n"
            "spec: {agentRef: {name: a}, userInput: u}\n"))
        profile = cProfile.Profile()
        started = time.perf_counter()
        if PROFILE:
            profile.enable()
        asyncio.run(run_loop(STEPS))
        profile.disable()
        elapsed = time.perf_counter() - started
        with urllib.request.urlopen(LLM_URL.removesuffix("/v1") + "/_requests") as response:
            requests = json.load(response)
        gaps = [b["received_at"] - a["received_at"] for a, b in zip(requests, requests[1:])]
        first, last = gaps[:10], gaps[-10:]
        print(f"{STEPS} steps in {elapsed:.2f} s; request-to-request gap p50 {statistics.median(gaps) * 1000:.1f} ms, "
              f"first 10 steps {statistics.median(first) * 1000:.1f} ms, last 10 {statistics.median(last) * 1000:.1f} ms"
              f" (includes the server's own time){'; profiled, so slower than in an actor' if PROFILE else ''}")
        for name, times in TIMES.items():  # the LLM request's time includes the server's own
            print(f"  {name}: p50 {statistics.median(times) * 1000:.1f} ms, last 10 {statistics.median(times[-10:]) * 1000:.1f} ms")
        if PROFILE:
            pstats.Stats(profile).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(45)
    return 0


if __name__ == "__main__":
    sys.exit(main())
