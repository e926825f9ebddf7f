"""What a step costs by kind (issue 23): a pure tool (builtin `echo`) against an `http` tool with effects calling a
local no-op endpoint, side by side in one run, and both against a bare status PATCH of the same size (the floor).

Per kind: one conversation of STEPS tool rounds through the real AgentLoop, the real checkpoint store against a
local kube-apiserver, the real LLM client against the scripted LLM server (its own process, as for an actor) and
the real tool executor, without Ray (as bench/profile_step.py). A step's time is the gap between consecutive LLM
requests at the server (it replies at once; the gap includes its own ~1 ms, and the request's encoding and parsing,
which grow with the conversation: every request carries it all). Each status write is timed too. Writes and bytes are counted at the
store's REST client: status PATCHes, and sealed chunks (ConfigMaps) apart. Figures for the first steps (2-51) and
around step 500 (476-525), so growth with the conversation shows. Numbers only: nothing here asserts a timing.

    .venv/bin/python bench/bench_step.py          # BENCH_STEP_STEPS=530 by default
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

from common import ROOT, quantiles, record

from harness.controlplane import LocalControlPlane
from harness.localenv import install_crds, kubectl

STEPS = int(os.environ.get("BENCH_STEP_STEPS", "530"))
FLOOR_SAMPLES = int(os.environ.get("BENCH_STEP_FLOOR_SAMPLES", "100"))
WINDOWS = {"first steps": (1, 51), "step 500": (475, 525)}  # gap i is the step between requests i and i + 1
NOOP = ("import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        self.rfile.read(int(self.headers.get('Content-Length', 0)))\n"
        "        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers()\n"
        "        self.wfile.write(b'ok')\n"
        "    def log_message(self, *a): pass\n"
        "s = h.ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
        "print(f'http://127.0.0.1:{s.server_port}/', flush=True)\n"
        "s.serve_forever()\n")


class Counted:
    """The store's REST client, recording each write: (wall time, what, request bytes, seconds it took)."""

    def __init__(self, rest):
        self.rest, self.writes = rest, []

    async def send(self, method, path, body=None, content_type="application/json"):
        if method == "GET":
            return await self.rest.send(method, path, body, content_type)
        size = len(body) if isinstance(body, bytes) else len(json.dumps(body).encode())
        started = time.perf_counter()
        try:
            return await self.rest.send(method, path, body, content_type)
        finally:
            what = "status" if path.endswith("/status") else "chunk"
            self.writes.append((time.time(), what, size, time.perf_counter() - started))


def create_taskrun(kubeconfig, name: str) -> str:
    kubectl(kubeconfig, "-n", "default", "apply", "-f", "-", input=(
        f"apiVersion: kubechain.dev/v1alpha1\nkind: TaskRun\nmetadata: {{name: {name}}}\n"
        "spec: {agentRef: {name: a}, userInput: u}\n"))
    return kubectl(kubeconfig, "-n", "default", "get", "taskrun", name, "-o", "jsonpath={.metadata.uid}").stdout


async def conversation(kubeconfig, kind: str, tool, llm_url: str) -> list:
    """Run model `kind`'s script in TaskRun `kind`; the store's writes."""
    from actors.checkpoint import KubeCheckpointStore, KubeREST
    from actors.llm import OpenAIChatClient
    from actors.loop import AgentLoop
    from actors.telemetry import RunTelemetry
    from actors.tools.executor import LocalToolExecutor
    from kubechain.api.runspec import RunSpec, TaskRunRef
    from kubechain.api.v1alpha1 import LLMSpec, Phase
    from kubechain.core.lifecycle import enter

    uid = create_taskrun(kubeconfig, kind)
    spec = RunSpec(taskrun=TaskRunRef(namespace="default", name=kind, uid=uid), agent="a", epoch=0,
                   llm=LLMSpec(model=kind, base_url=llm_url), system_prompt="s", user_input="u",
                   tools=[tool], max_turns=STEPS + 5)
    rest = Counted(KubeREST.shared())
    store = KubeCheckpointStore(spec.taskrun, spec.epoch, rest=rest)
    status = enter(await store.load(), Phase.RUNNING, "Bench", now=datetime.now(timezone.utc))
    llm, tools = OpenAIChatClient(spec.llm, None), LocalToolExecutor(spec.tools)
    try:
        final = await AgentLoop(spec, llm, tools, store, RunTelemetry()).run(status)
        assert final.phase is Phase.COMPLETED, final.error
    finally:
        await asyncio.gather(llm.close(), tools.aclose(), rest.rest.close())
    return rest.writes


async def floor(kind: str, size: int) -> list[float]:
    """A bare status PATCH of `size` bytes on TaskRun `kind` (as it ended: the same object), alternating content
    so each one is a real write."""
    from actors.checkpoint import KubeREST

    rest, path = KubeREST.shared(), f"/apis/kubechain.dev/v1alpha1/namespaces/default/taskruns/{kind}/status"
    _, obj = await rest.send("GET", path)
    times = []
    for i in range(FLOOR_SAMPLES):
        body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": {"output": ""}}
        body["status"]["output"] = str(i % 2) * max(1, size - len(json.dumps(body)))
        started = time.perf_counter()
        code, obj = await rest.send("PATCH", path, body, "application/merge-patch+json")
        times.append(time.perf_counter() - started)
        assert code == 200, obj
    await rest.close()
    return times


def per_step(requests: list[dict], writes: list, window: tuple[int, int]) -> dict:
    """The steps in `window`: gap quantiles, status writes, chunk writes and bytes per step."""
    times = [r["received_at"] for r in requests]
    lo, hi = window
    gaps = [b - a for a, b in zip(times[lo:hi], times[lo + 1:hi + 1])]
    inside = [w for w in writes if times[lo] < w[0] <= times[hi]]
    steps = hi - lo
    status = [w[2] for w in inside if w[1] == "status"]
    return {"step_ms": quantiles(gaps, 1000), "status_write_ms": quantiles([w[3] for w in inside if w[1] == "status"], 1000),
            "status_writes_per_step": len(status) / steps,
            "chunk_writes_per_step": sum(w[1] == "chunk" for w in inside) / steps,
            "bytes_per_step": sum(w[2] for w in inside) / steps,
            "bytes_per_status_write": statistics.mean(status) if status else 0}


def main() -> int:
    from kubechain.api.runspec import ResolvedTool
    from kubechain.api.v1alpha1 import ToolExecution

    workdir = ROOT / ".work" / "bench-step"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    noop = subprocess.Popen([sys.executable, "-c", NOOP], stdout=subprocess.PIPE, text=True)
    url = noop.stdout.readline().strip()
    tools = {"pure": ResolvedTool(name="noop", description="no-op", parameters={"type": "object"},
                                  execution=ToolExecution.model_validate({"builtin": {"name": "echo"}})),
             "effects": ResolvedTool(name="noop", description="no-op", parameters={"type": "object"},
                                     execution=ToolExecution.model_validate({"http": {"url": url}}))}
    scripts = []
    for kind in tools:
        path = workdir / f"{kind}.json"
        path.write_text(json.dumps([{"tool_calls": [{"name": "noop", "arguments": {"i": 1}}]}] * STEPS
                                   + [{"content": "done"}]))
        scripts += ["--script", f"{kind}={path}"]
    server = subprocess.Popen([sys.executable, "-m", "kubechain.demo.llm_server", "--port", "0", *scripts],
                              stdout=subprocess.PIPE, text=True)
    try:
        llm_url = server.stdout.readline().split()[-1]
        with LocalControlPlane(workdir / "k8s") as cp:
            os.environ["KUBECONFIG"] = str(cp.kubeconfig)
            install_crds(cp.kubeconfig)
            writes = {kind: asyncio.run(conversation(cp.kubeconfig, kind, tool, llm_url)) for kind, tool in tools.items()}
            with urllib.request.urlopen(llm_url.removesuffix("/v1") + "/_requests") as response:
                requests = json.load(response)
            figures = {kind: {name: per_step([r for r in requests if r["model"] == kind], writes[kind], window)
                              for name, window in WINDOWS.items()} for kind in tools}
            size = round(figures["effects"]["first steps"]["bytes_per_status_write"])
            bare = quantiles(asyncio.run(floor("pure", size)), 1000)
    finally:
        for process in (server, noop):
            process.terminate()
            process.wait()
    report(figures, bare, size)
    return 0


def report(figures: dict, bare: dict, size: int) -> None:
    result = record("step", {**figures, "bare_status_patch_ms": bare, "bare_status_patch_bytes": size})
    print(f"bare status PATCH of {size} B (the floor): p50 {bare['p50']:.1f} ms, p90 {bare['p90']:.1f} ms")
    print(f"{'':<22}{'p50 ms':>8}{'p90 ms':>8}{'× floor':>9}{'writes':>8}{'chunks':>8}{'B/step':>8}{'B/write':>9}"
          f"{'write p50':>11}{'p90':>7}")
    for window in WINDOWS:
        for kind in ("pure", "effects"):
            f = result[kind][window]
            print(f"{kind + ', ' + window:<22}{f['step_ms']['p50']:>8.1f}{f['step_ms']['p90']:>8.1f}"
                  f"{f['step_ms']['p50'] / bare['p50']:>9.2f}{f['status_writes_per_step']:>8.2f}"
                  f"{f['chunk_writes_per_step']:>8.2f}{f['bytes_per_step']:>8.0f}{f['bytes_per_status_write']:>9.0f}"
                  f"{f['status_write_ms']['p50']:>11.1f}{f['status_write_ms']['p90']:>7.1f}")
        ratio = result["effects"][window]["step_ms"]["p50"] / result["pure"][window]["step_ms"]["p50"]
        print(f"{'effects / pure, ' + window:<22}{ratio:>8.2f}   (goal ≤ 1.5; each ≤ 2.5 × floor; writes 1 and ≤ 2)")


if __name__ == "__main__":
    sys.exit(main())
