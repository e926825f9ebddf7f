"""Two operator replicas on their own stack: the reconciling one SIGKILLed, then both rolled one after the other,
each during a burst of kubectl writes (Tasks created, TaskRuns patched, LLMs read through the conversion webhook).

What must hold each time: no kubectl request refused (every one is counted), every run completes, and nothing runs
twice (one TaskRun per Task; each run's first LLM step asked once per epoch). The webhook certificate rotates
through the whole test (a 60 s lifetime), so its steps land in the bursts too.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.localenv import LocalEnvironment, Operator, kubectl

from .chaos import wait_until
from .conftest import LLM_KEY, Kube, agent, llm, secret, task, toolset

pytestmark = pytest.mark.integration
LEASE = ("kubechain-system", "kubechain-operator")
CERT_SECRET = ("kubechain-system", "kubechain-webhook-cert")
SCRIPT = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}], "latency": 0.5},
          {"content": "the answer is {last_tool_result}", "latency": 1.0}]
HA_ENV = {
    "KUBECHAIN_MAX_RUNNING": "6",  # runs queue behind each other: the queue is carried across the failovers too
    "KUBECHAIN_WEBHOOK_CERT_LIFETIME_SECONDS": "60",  # rotation starts 40 s after each new certificate
    "KUBECHAIN_WEBHOOK_CERT_OVERLAP_SECONDS": "6",
    "KUBECHAIN_WEBHOOK_CERT_CHECK_SECONDS": "2",
}


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    # A driver on the GCS address, not Ray Client: this stack may run beside the session's (their Ray Client
    # proxies would hand out the same ports).
    with LocalEnvironment(Path(tmp_path_factory.mktemp("ha")), llm_api_key=LLM_KEY, replicas=2, ray_client=False,
                          operator_env=HA_ENV) as env:
        yield env


@pytest.fixture
def kube(ha, request) -> Kube:
    namespace = f"ha-{request.node.name.replace('_', '-')}"[:50].strip("-")
    kubectl(ha.kubeconfig, "create", "namespace", namespace)
    return Kube(ha, namespace)


def holder(stack: LocalEnvironment) -> str:
    lease = json.loads(kubectl(stack.kubeconfig, "-n", LEASE[0], "get", "lease", LEASE[1], "-o", "json").stdout)
    return lease["spec"].get("holderIdentity") or ""


def leader(stack: LocalEnvironment) -> Operator:
    name = wait_until(lambda: holder(stack), timeout=60, what="a holder of the Lease")
    return next(o for o in stack.operators if o.name == name)


def served_ca(stack: LocalEnvironment) -> str:
    found = kubectl(stack.kubeconfig, "-n", CERT_SECRET[0], "get", "secret", CERT_SECRET[1], "-o",
                    "jsonpath={.data.ca\\.crt}")
    return found.stdout


def question(task_name: str) -> str:
    """Each Task's own userInput: how the LLM server's requests are told apart by run."""
    return f"question of {task_name}"


class Burst:
    """kubectl writes and reads in two threads until stopped; every outcome is kept."""

    def __init__(self, kube: Kube, prefix: str):
        self.kube, self.prefix = kube, prefix
        self.outcomes: list[tuple[str, int, str]] = []  # (request, exit code, stderr)
        self.created: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._create, daemon=True),
                         threading.Thread(target=self._patch_and_read, daemon=True)]

    def __enter__(self) -> "Burst":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _record(self, what: str, result) -> None:
        self.outcomes.append((what, result.returncode, result.stderr.strip()))

    def _create(self) -> None:
        i = 0
        while not self._stop.is_set():
            name = f"{self.prefix}-{i}"
            manifest = json.dumps(task(name, "a", question(name)))
            result = self.kube.run("create", "-f", "-", input=manifest, check=False)
            self._record(f"create task/{name}", result)
            if result.returncode == 0:
                self.created.append(name)
            i += 1
            time.sleep(0.3)

    def _patch_and_read(self) -> None:
        i = 0
        while not self._stop.is_set():
            if self.created:
                run = f"{self.created[i % len(self.created)]}-run"
                exists = self.kube.run("get", "taskrun", run, "-o", "name", check=False).returncode == 0
                if exists:  # a Task's run appears a moment after the Task
                    self._record(f"patch taskrun/{run}", self.kube.run(
                        "patch", "taskrun", run, "--type", "merge", "-p",
                        json.dumps({"metadata": {"labels": {"burst": str(i)}}}), check=False))
            self._record("get llms", self.kube.run("get", "llms", "-o", "name", check=False))  # v1alpha2: converted
            i += 1

    def refused(self) -> list[tuple[str, int, str]]:
        return [o for o in self.outcomes if o[1] != 0]


def set_up(kube: Kube, stack: LocalEnvironment) -> str:
    model = f"{kube.namespace}-model"
    stack.llm.set_script(model, SCRIPT)
    math = toolset("math", inline=[{"name": "calculator", "description": "arithmetic",
                                    "execution": {"builtin": {"name": "calculator"}}}])
    kube.apply([secret(), llm("m", stack.llm.base_url, model), math, agent("a", "m", ["math"])])
    kube.wait_ready("agent", "a")
    return model


def check_runs(kube: Kube, stack: LocalEnvironment, model: str, tasks: list[str]) -> None:
    """Every run completed, once: one TaskRun per Task, and its first step asked once per epoch."""
    def all_completed():
        items = json.loads(kube.run("get", "taskruns", "-o", "json").stdout)["items"]
        done = [r for r in items if (r.get("status") or {}).get("phase") == "Completed"]
        return items if len(done) == len(tasks) == len(items) else None

    runs = wait_until(all_completed, timeout=300, what=f"the {len(tasks)} runs completed")
    assert sorted(r["metadata"]["name"] for r in runs) == sorted(f"{t}-run" for t in tasks)
    assert {r["status"]["output"] for r in runs} == {"the answer is 42"}
    first_steps = Counter(next(m["content"] for m in r["messages"] if m["role"] == "user")
                          for r in stack.llm.requests() if r["model"] == model and r["step"] == 0)
    for run in runs:
        asked = first_steps[question(run["spec"]["taskRef"]["name"])]
        assert 1 <= asked <= run["status"]["epoch"], f"{run['metadata']['name']}: first step asked {asked} times " \
                                                     f"in {run['status']['epoch']} epoch(s)"


def test_the_reconciling_replica_killed_during_a_burst(kube, ha):
    model = set_up(kube, ha)
    before, ca_before = leader(ha), served_ca(ha)
    with Burst(kube, "kill") as burst:
        wait_until(lambda: len(burst.created) >= 5, timeout=60, what="the burst under way")
        killed_at = time.monotonic()
        before.kill_reconciler(hold=True)  # its node is gone: the other replica must take over
        after = wait_until(lambda: (h := holder(ha)) != before.name and h, timeout=60, what="a new leader")
        took = time.monotonic() - killed_at
        before.release()
        wait_until(lambda: len(burst.created) >= 15, timeout=120, what="the burst going on after the failover")
    print(f"\nthe Lease went from {before.name} to {after} {took:.1f} s after the SIGKILL; "
          f"{len(burst.outcomes)} kubectl requests, {len(burst.created)} Tasks")
    assert burst.refused() == []
    assert len(burst.outcomes) >= 20
    check_runs(kube, ha, model, burst.created)
    assert served_ca(ha) != ca_before, "the certificate did not rotate during the test"


def test_both_replicas_rolled_one_after_the_other_during_a_burst(kube, ha):
    model = set_up(kube, ha)
    holders = []
    with Burst(kube, "roll") as burst:
        wait_until(lambda: len(burst.created) >= 3, timeout=60, what="the burst under way")
        for replica in ha.operators:
            replica.roll()  # SIGTERM both its processes, as a rollout replacing the pod; then the new ones start
            holders.append(leader(ha).name)
        wait_until(lambda: len(burst.created) >= len(holders) * 3 + 6, timeout=120, what="the burst going on")
    print(f"\nleaders after each roll: {holders}; {len(burst.outcomes)} kubectl requests, {len(burst.created)} Tasks")
    assert burst.refused() == []
    check_runs(kube, ha, model, burst.created)
