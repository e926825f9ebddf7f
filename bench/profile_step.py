"""Profile the actor's per-step path without Ray: the real AgentLoop, the real checkpoint store against a local
kube-apiserver, the real openai client against the scripted LLM server, a no-op tool. Prints the time per step
and the top functions by cumulative time (cProfile), so a regression of the hot path shows where it comes from.

    .venv/bin/python bench/profile_step.py [STEPS] [--no-profile]
"""
from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import shutil
import statistics
import sys
import time

from common import ROOT

from kubechain.testing.controlplane import LocalControlPlane
from kubechain.testing.llm_server import ScriptedLLMServer
from kubechain.testing.localenv import install_crds, kubectl

STEPS = int(next((a for a in sys.argv[1:] if a.isdigit()), "200"))
PROFILE = "--no-profile" not in sys.argv


async def run_loop(steps: int) -> None:
    from actors.checkpoint import KubeCheckpointStore
    from actors.llm import OpenAIChatClient
    from actors.loop import AgentLoop
    from actors.telemetry import RunTelemetry
    from actors.tools.executor import LocalToolExecutor
    from kubechain.api.runspec import ResolvedTool, RunSpec, TaskRunRef
    from kubechain.api.v1alpha1 import LLMSpec, Phase, ToolExecution
    from kubechain.taskrun_lifecycle import enter

    uid = kubectl(KUBECONFIG, "-n", "default", "get", "taskrun", "p", "-o", "jsonpath={.metadata.uid}").stdout
    echo = ResolvedTool(name="noop", description="no-op", parameters={"type": "object", "properties": {}},
                        execution=ToolExecution.model_validate({"builtin": {"name": "echo"}}))
    spec = RunSpec(taskrun=TaskRunRef(namespace="default", name="p", uid=uid), agent="a", epoch=0,
                   llm=LLMSpec(model="profile", base_url=LLM.base_url), system_prompt="s", user_input="u",
                   tools=[echo], max_turns=steps + 5)
    store = KubeCheckpointStore(spec.taskrun, spec.epoch)
    status = enter(await store.load(), Phase.RUNNING, "Profile")
    loop = AgentLoop(spec, OpenAIChatClient(spec.llm, None), LocalToolExecutor(spec.tools), store, RunTelemetry())
    await loop.run(status)


def main() -> int:
    global KUBECONFIG, LLM
    workdir = ROOT / ".work" / "profile"
    shutil.rmtree(workdir, ignore_errors=True)
    with LocalControlPlane(workdir / "k8s") as cp, ScriptedLLMServer() as llm:
        KUBECONFIG, LLM = cp.kubeconfig, llm
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        install_crds(cp.kubeconfig)
        llm.set_script("profile", [{"tool_calls": [{"name": "noop", "arguments": {"i": 1}}]}] * STEPS
                       + [{"content": "done"}])
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
        requests = llm.requests()
        gaps = [b["received_at"] - a["received_at"] for a, b in zip(requests, requests[1:])]
        first, last = gaps[:10], gaps[-10:]
        print(f"{STEPS} steps in {elapsed:.2f} s; request-to-request gap p50 {statistics.median(gaps) * 1000:.1f} ms, "
              f"first 10 steps {statistics.median(first) * 1000:.1f} ms, last 10 {statistics.median(last) * 1000:.1f} ms"
              f" (includes the server's own time){'; profiled, so slower than in an actor' if PROFILE else ''}")
        if PROFILE:
            pstats.Stats(profile).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(45)
    return 0


if __name__ == "__main__":
    sys.exit(main())
