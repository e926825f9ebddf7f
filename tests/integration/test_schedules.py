"""TaskSchedule on the real stack: a schedule every 10 s starts runs owned by it, named after their time; Forbid
skips a time while a slow run goes on (Event RunSkipped); history limits delete the oldest ended runs; a suspended
schedule starts nothing; deleting the schedule deletes its runs. A bad cron expression is refused at admission."""
from __future__ import annotations

import calendar
import json
import time

import pytest

from .conftest import Kube, agent, llm, secret

pytestmark = pytest.mark.integration


def schedule(name: str, **spec) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskSchedule", "metadata": {"name": name},
            "spec": {"runTemplate": {"agentRef": {"name": "a"}, "userInput": "report", "maxTurns": 3}, **spec}}


def runs(kube: Kube, name: str) -> list[dict]:
    found = json.loads(kube.run("get", "taskruns", "-l", f"kubechain.dev/schedule={name}", "-o", "json").stdout)
    return sorted(found["items"], key=lambda o: o["metadata"]["name"])


def wait(what: str, check, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"never: {what}")


def test_a_schedule_runs_its_agent_at_each_time_and_keeps_its_history(kube, stack):
    model = f"{kube.namespace}-m"
    stack.llm.set_script(model, [{"content": "the report", "latency": 14}])
    kube.apply([secret(), llm("m", stack.llm.base_url, model), agent("a", "m"),
                schedule("every10", schedule="* * * * * */10", concurrencyPolicy="Forbid",
                         successfulRunsHistoryLimit=1)])
    first = wait("a first run", lambda: runs(kube, "every10"))[0]
    due = first["metadata"]["annotations"]["kubechain.dev/scheduled-at"]
    assert first["metadata"]["name"] == f"every10-{calendar.timegm(time.strptime(due, '%Y-%m-%dT%H:%M:%SZ'))}"
    assert first["metadata"]["ownerReferences"][0]["kind"] == "TaskSchedule"
    assert first["spec"]["agentRef"] == {"name": "a"} and first["spec"]["userInput"] == "report"
    # The next time comes while the first run (14 s of LLM latency) goes on: skipped, said in an Event.
    wait("a skipped time", lambda: any(e["reason"] == "RunSkipped" for e in kube.events("every10")), timeout=40)
    status = kube.get("taskschedule", "every10")["status"]
    assert status["active"] == [first["metadata"]["name"]] and status["nextScheduleTime"] > status["lastScheduleTime"]
    kube.wait_phase(first["metadata"]["name"], "Completed", timeout=60)
    # Later runs start again; with a history of 1 the first Completed run is deleted once a second one completes.
    wait("the first run pruned", lambda: first["metadata"]["name"] not in [r["metadata"]["name"] for r in runs(
        kube, "every10")] and any((r.get("status") or {}).get("phase") == "Completed" for r in runs(kube, "every10")),
        timeout=90)
    assert kube.get("taskschedule", "every10")["status"]["lastSuccessfulTime"]

    # Suspended: nothing new starts (times pass as missed); runs going on are left alone.
    kube.run("patch", "taskschedule", "every10", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    wait("suspended", lambda: "nextScheduleTime" not in kube.get("taskschedule", "every10")["status"], timeout=20)
    names = {r["metadata"]["name"] for r in runs(kube, "every10")}
    time.sleep(12)
    assert {r["metadata"]["name"] for r in runs(kube, "every10")} == names
    # Deleting the schedule deletes its runs (they are its dependents).
    kube.run("delete", "taskschedule", "every10", "--wait=false")
    wait("runs garbage-collected", lambda: not runs(kube, "every10"), timeout=60)


def test_a_bad_schedule_is_refused_naming_the_field(kube, stack):
    result = kube.apply([schedule("bad", schedule="every day")], check=False)
    assert result.returncode != 0 and "schedule: Value error, 'every day' is not a cron expression" in result.stderr
    high = schedule("urgent", schedule="@daily")
    high["spec"]["runTemplate"]["priority"] = 10**6
    result = kube.apply([high], check=False)
    assert result.returncode != 0 and "spec.runTemplate.priority 1000000 is over the highest priority" in result.stderr
