"""Admission control on the real stack: limits, queue positions, FIFO, fairness across namespaces, priority,
and a queued run starting as soon as a slot frees."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from harness.localenv import kubectl

from .chaos import wait_until
from .conftest import Kube, agent, llm, secret, task

pytestmark = pytest.mark.integration
LATENCY = 2.0


def slow_agent(kube, stack) -> None:
    model = f"{kube.namespace}-slow"
    stack.llm.set_script(model, [{"content": "done", "latency": LATENCY}])
    kube.apply([secret(), llm("m", stack.llm.base_url, model), agent("a", "m")])
    kube.wait_ready("agent", "a")


def started(run: dict) -> datetime:
    when = next(t["time"] for t in run["status"]["phaseHistory"] if t["phase"] == "Running")
    return datetime.fromisoformat(when.replace("Z", "+00:00"))


def runs(kube) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in json.loads(kube.run("get", "taskruns", "-o", "json").stdout)["items"]}


def running(kube) -> list[str]:
    return sorted(n for n, r in runs(kube).items() if (r.get("status") or {}).get("phase") == "Running")


def test_namespace_limit_queues_in_order_and_a_freed_slot_is_used_at_once(kube, stack):
    kubectl(stack.kubeconfig, "annotate", "namespace", kube.namespace, "kubechain.dev/max-running=2")
    slow_agent(kube, stack)
    for i in range(5):
        kube.apply([task(f"t{i}", "a", f"job {i}")])
    queued = kube.wait_for("taskrun", "t4-run", lambda o: (o.get("status") or {}).get("queuePosition") == 3)
    assert queued["status"]["message"].startswith("Queued: position 3 of 3 (namespace limit: 2 of 2 running)")
    seen_running = set()
    def at_most_two() -> bool:
        now = running(kube)
        assert len(now) <= 2, f"limit 2 exceeded: {now}"
        seen_running.update(now)
        return all((r.get("status") or {}).get("phase") == "Completed" for r in runs(kube).values())
    wait_until(at_most_two, timeout=90, what="all five runs completed, two at a time")
    done = runs(kube)
    order = sorted(done, key=lambda n: started(done[n]))
    assert order == [f"t{i}-run" for i in range(5)]  # first come, first served
    # A queued run starts as soon as a slot frees: the gap from a run's end to the next start is small.
    ends = sorted(datetime.fromisoformat(r["status"]["phaseHistory"][-1]["time"].replace("Z", "+00:00"))
                  for r in done.values())
    gap = (started(done["t2-run"]) - ends[0]).total_seconds()
    assert 0 <= gap < 2.0, f"t2 started {gap:.2f} s after the first slot freed"


def quiesce(stack) -> None:
    """Cancel what earlier tests left running: a cluster-wide limit counts every namespace's runs."""
    every = json.loads(kubectl(stack.kubeconfig, "get", "taskruns", "-A", "-o", "json").stdout)["items"]
    for run in every:
        if (run.get("status") or {}).get("phase") not in ("Completed", "Failed"):
            kubectl(stack.kubeconfig, "-n", run["metadata"]["namespace"], "patch", "taskrun", run["metadata"]["name"],
                    "--type", "merge", "-p", '{"spec":{"cancel":true}}', check=False)

    def quiet() -> bool:
        items = json.loads(kubectl(stack.kubeconfig, "get", "taskruns", "-A", "-o", "json").stdout)["items"]
        return not [r for r in items if (r.get("status") or {}).get("phase") == "Running"]
    wait_until(quiet, timeout=60, what="no TaskRun Running anywhere")


@pytest.fixture
def global_limit(stack):
    quiesce(stack)
    stack.operator.reconfigure(KUBECHAIN_MAX_RUNNING="3")
    yield 3
    stack.operator.reconfigure(KUBECHAIN_MAX_RUNNING=None)


def test_a_burst_does_not_starve_another_namespace_and_priority_goes_first(stack, global_limit):
    big, small = (Kube(stack, ns) for ns in ("burst-big", "burst-small"))
    for kube in (big, small):
        kubectl(stack.kubeconfig, "create", "namespace", kube.namespace)
        slow_agent(kube, stack)
    # Only a namespace a cluster admin lets use a priority may set one (KUBECHAIN_MAX_PRIORITY is 0).
    kubectl(stack.kubeconfig, "annotate", "namespace", big.namespace, "kubechain.dev/max-priority=10")
    big.apply([task(f"b{i}", "a", f"big {i}") for i in range(8)])
    wait_until(lambda: len(running(big)) == global_limit, timeout=30, what="the burst filling every slot")
    small.apply([task(f"s{i}", "a", f"small {i}") for i in range(2)])
    big.apply([task("urgent", "a", "urgent", priority=10)])
    for kube, names in ((big, [f"b{i}-run" for i in range(8)] + ["urgent-run"]), (small, ["s0-run", "s1-run"])):
        for name in names:
            kube.wait_phase(name, "Completed", timeout=120)
    b, s = runs(big), runs(small)
    first_three = sorted(b, key=lambda n: started(b[n]))[:3]
    # The burst filled the three slots (which three of b0..b7 depends on the order the operator created their
    # TaskRuns in: the eight Tasks came in one apply).
    assert len(first_three) == 3 and "urgent-run" not in first_three
    # Once slots free, the urgent run goes first, then the small namespace before the rest of the burst.
    after = sorted([*(("big", n, started(r)) for n, r in b.items() if n not in first_three),
                    *(("small", n, started(r)) for n, r in s.items())], key=lambda x: x[2])
    assert after[0][1] == "urgent-run"
    # First come, first served alone would run all five left of the burst before the small namespace's runs
    # (created after them); slots shared across namespaces let both small runs in before its last two.
    last_two = sorted(started(r) for n, r in b.items() if n != "urgent-run")[-2:]
    assert max(started(r) for r in s.values()) < min(last_two)


def test_an_llms_max_concurrent_runs_queues_its_runs_and_not_the_others(kube, stack):
    """Runs of an LLM with maxConcurrentRuns: 1 run one at a time, the others wait saying so; a run of another
    LLM in the same namespace is not held back behind them."""
    limited, free = f"{kube.namespace}-limited", f"{kube.namespace}-free"
    for model in (limited, free):
        stack.llm.set_script(model, [{"content": "done", "latency": LATENCY}])
    kube.apply([secret(), llm("one", stack.llm.base_url, limited, maxConcurrentRuns=1), agent("a", "one"),
                llm("any", stack.llm.base_url, free), agent("b", "any")])
    kube.wait_ready("agent", "a")
    kube.wait_ready("agent", "b")
    kube.apply([task(f"t{i}", "a", f"job {i}") for i in range(3)])

    second: list[dict] = []

    def second_in_line() -> bool:  # which of the three it is depends on the order their TaskRuns were made
        second[:] = [r for r in runs(kube).values() if (r.get("status") or {}).get("queuePosition") == 2]
        return bool(second)
    wait_until(second_in_line, timeout=60, what="a run second in the queue")
    assert second[0]["status"]["message"] == (
        "Queued: position 2 of 2 (LLM one limit: 1 of 1 running (maxConcurrentRuns))")
    kube.apply([task("other", "b", "not behind them")])
    kube.wait_phase("other-run", "Completed", timeout=30)

    def one_at_a_time() -> bool:
        now = [n for n in running(kube) if n != "other-run"]
        assert len(now) <= 1, f"maxConcurrentRuns 1 exceeded: {now}"
        return all((runs(kube)[f"t{i}-run"].get("status") or {}).get("phase") == "Completed" for i in range(3))
    wait_until(one_at_a_time, timeout=60, what="the three runs of the limited LLM completed one at a time")
    done = runs(kube)
    assert started(done["other-run"]) < started(done["t1-run"])  # it did not wait behind the limited LLM's queue
