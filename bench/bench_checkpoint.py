"""Checkpoint time per step at 5 KB vs 5 MB of context (goal: ratio ≤ 1.5), against the real kube-apiserver.

The actor's own store (actors/checkpoint.py) writes into a real TaskRun: first the base context
(sealed into chunks as the layout decides), then SAMPLES steps of one small tool call each, timed.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time

from kubernetes import client, config

from common import GV, ROOT, quantiles, record, table
from actors.checkpoint import KubeCheckpointStore
from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import CallState, FunctionCall, Message, Phase, ToolCall, ToolCallRecord
from harness.controlplane import LocalControlPlane
from harness.localenv import install_crds

SAMPLES = int(os.environ.get("BENCH_CHECKPOINT_SAMPLES", "40"))


def step(status, i: int, content: str) -> None:
    call = ToolCall(id=f"c{i}", function=FunctionCall(name="noop", arguments="{}"))
    status.context_window += [Message(role="assistant", tool_calls=[call]),
                              Message(role="tool", tool_call_id=f"c{i}", content=content)]
    status.tool_call_history.append(ToolCallRecord(id=f"c{i}", step=i, tool="noop", arguments="{}",
                                                   state=CallState.SUCCEEDED, result=content[:100]))
    status.step = i


async def measure(name: str, base_bytes: int) -> list[float]:
    body = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": {"name": "none"}}}
    uid = client.CustomObjectsApi().create_namespaced_custom_object(*GV, "default", "taskruns", body)["metadata"]["uid"]
    store = KubeCheckpointStore(TaskRunRef(namespace="default", name=name, uid=uid), epoch=0)
    return await timed_saves(store, base_bytes, SAMPLES)


async def timed_saves(store: KubeCheckpointStore, base_bytes: int, samples: int) -> list[float]:
    """Fill the run's context to `base_bytes` (5 KB tool results), then time `samples` checkpoints of a step each."""
    status = (await store.load()).model_copy(update={"phase": Phase.RUNNING})
    i = 0
    while sum(len(m.content or "") for m in status.context_window) < base_bytes:
        i += 1
        step(status, i, "x" * min(5000, base_bytes))
        await store.save(status)
    times = []
    for _ in range(samples):
        i += 1
        step(status, i, "ok")
        started = time.perf_counter()
        await store.save(status)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    workdir = ROOT / ".work" / "bench-checkpoint"
    shutil.rmtree(workdir, ignore_errors=True)
    with LocalControlPlane(workdir) as cp:
        install_crds(cp.kubeconfig)
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        config.load_kube_config(str(cp.kubeconfig))
        small = asyncio.run(measure("small", 5_000))
        large = asyncio.run(measure("large", 5_000_000))
    s, l = quantiles(small, 1000), quantiles(large, 1000)
    result = record("checkpoint", {"checkpoint_ms_5KB_context": s, "checkpoint_ms_5MB_context": l,
                                   "ratio_p50": l["p50"] / s["p50"]})
    table(result, [("checkpoint per step, 5 KB context (ms)", "checkpoint_ms_5KB_context", ""),
                   ("checkpoint per step, 5 MB context (ms)", "checkpoint_ms_5MB_context", "")])
    print(f"{'ratio of p50s':<52}{result['ratio_p50']:>10.2f}{'':>16}{'≤ 1.5':>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
