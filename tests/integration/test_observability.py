"""One trace per TaskRun across operator and actors, Prometheus metrics through a real Prometheus,
conditions for `kubectl wait`, events."""
from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from harness.prometheus import LocalPrometheus

from .chaos import actor_pid, wait_until
from .conftest import LLM_KEY, agent, builtin_tool, llm, secret, task, toolset
from .test_delegation import team

pytestmark = pytest.mark.integration
DASHBOARD = Path(__file__).parents[2] / "kuberay" / "grafana" / "kubechain-dashboard.json"


def calc_agent(kube, stack, steps: list[dict]) -> str:
    model = f"{kube.namespace}-calc"
    stack.llm.set_script(model, steps)
    kube.apply([secret(), llm("model", stack.llm.base_url, model), builtin_tool("calculator", "calculator"),
                toolset("math", refs=["calculator"]), agent("calc", "model", ["math"])])
    return model


TWO_STEPS = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
             {"content": "It is {last_tool_result}."}]


def trace_id(run: dict) -> tuple[str, str]:
    _, trace, span, _ = run["status"]["traceparent"].split("-")
    return trace, span


def spans_of(otlp, trace: str, names: set[str], timeout: float = 20) -> list:
    wait_until(lambda: names <= {s.name for s in otlp.trace(trace)}, timeout=timeout,
               what=f"spans {sorted(names)} in trace {trace}; have {sorted({s.name for s in otlp.trace(trace)})}")
    return otlp.trace(trace)


def test_one_trace_follows_a_run_from_the_operator_through_every_actor_step(kube, stack, otlp):
    model = calc_agent(kube, stack, TWO_STEPS)
    kube.apply([task("traced", "calc", "6 times 7?")])
    run = kube.wait_phase("traced-run", "Completed")
    trace, root_id = trace_id(run)
    spans = spans_of(otlp, trace, {"TaskRun.reconcile", "TaskRun.supervise", "step 1", "step 2", f"chat {model}",
                                   "execute_tool calculator", "checkpoint"})
    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if s.span_id == root_id]
    assert (root.name, root.parent_id, root.service) == ("TaskRun.reconcile", "", "kubechain-operator")
    steps = [s for s in spans if s.name.startswith("step ")]
    assert {s.service for s in steps} == {"kubechain-actor"} and {s.parent_id for s in steps} == {root_id}
    assert steps[0].attributes["kubechain.name"] == "traced-run"
    chats = [s for s in spans if s.name == f"chat {model}"]
    assert len(chats) == 2 and all(by_id[c.parent_id].name.startswith("step ") for c in chats)
    assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in chats) == run["status"]["usage"]["completionTokens"]
    [tool] = [s for s in spans if s.name == "execute_tool calculator"]
    assert by_id[tool.parent_id].name == "step 1" and tool.attributes["kubechain.tool.outcome"] == "succeeded"
    # Every operator handler that ran for the run after it was scheduled joined its trace.
    operator = {s.name for s in spans if s.service == "kubechain-operator"}
    assert {"TaskRun.reconcile", "TaskRun.supervise"} <= operator


def test_a_restored_actor_and_child_runs_stay_in_the_trace(kube, stack, otlp):
    team(kube, stack, fact_latency=2)
    kube.apply([task("question", "boss", "Research A and B")])
    # The run seen Running is the one killed: a second listing may show a fact run created since, with no status.
    fact = wait_until(lambda: next((r for r in json.loads(kube.run("get", "taskruns", "-o", "json").stdout)["items"]
                                    if r["metadata"]["labels"].get("kubechain.dev/agent") == "fact"
                                    and (r.get("status") or {}).get("phase") == "Running"), None),
                      timeout=60, what="a fact run running")
    os.kill(actor_pid(stack, fact["status"]["actor"]["name"]), signal.SIGKILL)
    parent = kube.wait_phase("question-run", "Completed", timeout=90)
    trace, root_id = trace_id(parent)
    restored = kube.get("taskrun", fact["metadata"]["name"])
    assert restored["status"]["epoch"] == 2 and trace_id(restored)[0] == trace  # the whole tree is one trace
    spans = spans_of(otlp, trace, {"step 1", "step 2"})
    epochs = {s.attributes.get("kubechain.epoch") for s in spans
              if s.attributes.get("kubechain.name") == fact["metadata"]["name"] and s.name.startswith("step")}
    assert 2 in epochs  # the restored actor's steps (the killed one's open span died with its process)
    child_roots = [s for s in spans if s.name == "TaskRun.reconcile" and s.parent_id == root_id]
    assert len(child_roots) >= 2  # each researcher's trace context hangs under the parent's


def test_prometheus_scrapes_operator_and_actor_metrics(kube, stack, tmp_path):
    model = calc_agent(kube, stack, TWO_STEPS)
    prometheus = LocalPrometheus(tmp_path / "prometheus", {
        "kubechain-operator": f"127.0.0.1:{stack.metrics_port}",
        "ray": f"127.0.0.1:{stack.ray.ports['metrics-export-port']}"}).start()
    try:
        kube.apply([task("measured", "calc", "6 times 7?")])
        kube.wait_phase("measured-run", "Completed")
        ns = kube.namespace
        [done] = prometheus.wait_for(f'kubechain_taskruns{{namespace="{ns}",phase="Completed"}}')
        assert done["value"][1] == "1"
        assert prometheus.wait_for('kubechain_reconciliations_total{kind="TaskRun",handler="reconcile"}')
        assert prometheus.wait_for('kubechain_reconcile_duration_seconds_count{kind="Agent"}')
        assert prometheus.wait_for('kubechain_taskrun_transitions_total{phase="Completed",reason="FinalAnswer"}')
        usage = kube.get("taskrun", "measured-run")["status"]["usage"]
        [tokens] = prometheus.wait_for(f'sum(ray_kubechain_llm_tokens_total{{namespace="{ns}",model="{model}",type="completion"}})')
        assert float(tokens["value"][1]) == usage["completionTokens"]
        [calls] = prometheus.wait_for('sum(ray_kubechain_tool_calls_total{tool="calculator",outcome="Succeeded"})')
        assert float(calls["value"][1]) >= 1
        assert prometheus.wait_for(f'ray_kubechain_llm_request_seconds_count{{model="{model}"}}')
        assert prometheus.wait_for("ray_kubechain_checkpoint_write_seconds_count")
        # Every metric the Grafana dashboard plots exists: the operator declares it, or Prometheus has Ray's series.
        declared = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).read().decode()
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            for metric in re.findall(r"\b(?:ray_)?kubechain_[a-z_]+", panel["targets"][0]["expr"]):
                if metric.startswith("ray_"):
                    assert prometheus.query(f'count({{__name__="{metric}"}})'), f"{panel['title']}: no {metric}"
                else:
                    base = re.sub(r"_(bucket|count|sum|total)$", "", metric)
                    assert f"# HELP {base}" in declared, f"{panel['title']}: no {metric}"
    finally:
        prometheus.stop()


def test_kubectl_wait_for_conditions_and_events(kube, stack):
    calc_agent(kube, stack, TWO_STEPS)
    wait = kube.run("wait", "--for=condition=Ready", "agent/calc", "--timeout=30s")
    assert "condition met" in wait.stdout
    kube.apply([task("waited", "calc", "6 times 7?")])
    kube.wait_for("taskrun", "waited-run", lambda o: bool(o.get("status")), timeout=30)
    started = time.monotonic()
    wait = kube.run("wait", "--for=condition=Succeeded", "taskrun/waited-run", "--timeout=60s")
    assert "condition met" in wait.stdout and time.monotonic() - started < 60
    run = kube.get("taskrun", "waited-run")
    [succeeded] = [c for c in run["status"]["conditions"] if c["type"] == "Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("True", "FinalAnswer")
    reasons = [e["reason"] for e in kube.events("waited-run")]
    assert {"Scheduled", "ActorStarted", "FinalAnswer"} <= set(reasons)


def test_logs_never_contain_the_api_key(kube, stack):
    calc_agent(kube, stack, TWO_STEPS)
    kube.apply([task("quiet", "calc", "6 times 7?")])
    kube.wait_phase("quiet-run", "Completed")
    logs = [stack.operator.log, *Path(stack.ray.temp_dir, "session_latest", "logs").rglob("*")]
    texts = [p.read_text(errors="replace") for p in logs if p.is_file()]
    assert len(texts) > 5 and not any(LLM_KEY in t for t in texts)
