"""Chaos: kill actors (at step boundaries and mid-tool) and the operator; runs complete, nothing is repeated.

The agent calls a non-idempotent tool (`charge`), an idempotent one (`book`) and a builtin. Both
HTTP tools hit EffectCounter, a service outside the actor that records every POST by Idempotency-Key.
"""
from __future__ import annotations

import json
import urllib.request
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from kubernetes import config

from kubechain.clients.transcript import complete as full_transcript

from .chaos import EffectCounter, actor_pid, actors, kill_actor, wait_until
from .conftest import agent, llm, secret, task

pytestmark = pytest.mark.integration
LATENCY = 0.4  # every LLM reply takes this long, so a kill can land while a request is in flight
SCRIPT = [
    {"tool_calls": [{"name": "charge", "arguments": {"amount": 5}}], "latency": LATENCY},
    {"tool_calls": [{"name": "book", "arguments": {"seat": "1A"}}], "latency": LATENCY},
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}], "latency": LATENCY},
    {"content": "booked, 2+2={last_tool_result}", "latency": LATENCY},
]


@pytest.fixture
def counter():
    server = EffectCounter()
    yield server
    server.close()


def setup_agent(kube, stack, counter) -> str:
    model = f"{kube.namespace}-model"
    stack.llm.set_script(model, SCRIPT)
    http = lambda url, idem: {"http": {"url": url, "timeoutSeconds": 300}}  # noqa: E731  (a held call may be slow)
    tools = [{"name": "charge", "description": "charge a card", "execution": http(counter.url, False)},
             {"name": "book", "description": "book a seat", "idempotent": True, "execution": http(counter.url, True)},
             {"name": "calculator", "description": "math", "execution": {"builtin": {"name": "calculator"}}}]
    kube.apply([secret(), llm("model", stack.llm.base_url, model),
                {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": "effects"},
                 "spec": {"tools": tools}},
                agent("clerk", "model", ["effects"])])
    kube.wait_ready("agent", "clerk")
    return model


def start(kube, name: str) -> None:
    kube.apply([task(name, "clerk", "Charge 5, book 1A, add 2+2.")])


def requests_by_step(stack, model: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in stack.llm.requests():
        if r["model"] == model:
            counts[r["step"]] = counts.get(r["step"], 0) + 1
    return counts


def transcript(run: dict) -> list[dict]:
    return run["status"]["contextWindow"]


def test_no_fault_reference(kube, stack, counter):
    model = setup_agent(kube, stack, counter)
    start(kube, "calm")
    run = kube.wait_phase("calm-run", "Completed")
    assert run["status"]["output"] == "booked, 2+2=4"
    assert requests_by_step(stack, model) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert [p["body"] for p in counter.of(run["metadata"]["uid"])] == [{"amount": 5}, {"seat": "1A"}]
    assert [c["state"] for c in run["status"]["toolCallHistory"]] == ["Succeeded"] * 3
    assert (run["status"]["epoch"], run["status"]["actor"]["restarts"]) == (1, 0)


class StatusWrites:
    """Every write to one TaskRun, as its watch events (the apiserver sends each revision of an object, in order);
    `by_step()` keeps those that changed what the actor writes, so the operator's writes (actor, conditions) drop
    out: the actor's status writes per step."""

    def __init__(self, kube, stack, name: str):
        import threading

        from kubernetes import client, watch

        api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(stack.kubeconfig)))
        self.seen: list[dict] = []
        self._watch = watch.Watch()
        started = threading.Event()

        def follow() -> None:
            started.set()
            for event in self._watch.stream(api.list_namespaced_custom_object, "kubechain.dev", "v1alpha1",
                                            kube.namespace, "taskruns", field_selector=f"metadata.name={name}",
                                            timeout_seconds=120):
                self.seen.append(event["object"].get("status") or {})

        threading.Thread(target=follow, daemon=True).start()
        started.wait()
        time.sleep(0.5)  # the watch is established before the run exists

    def by_step(self) -> dict[int, list[tuple]]:
        self._watch.stop()
        states, last = {}, None
        for status in self.seen:
            actor_fields = (status.get("step", 0), len(status.get("contextWindow", [])),
                            tuple(c["state"] for c in status.get("toolCallHistory", [])), status.get("output"))
            if status.get("contextWindow") and actor_fields != last:
                states.setdefault(actor_fields[0], []).append(actor_fields[2])
            last = actor_fields
        return states


def test_a_step_with_effects_is_two_status_writes_and_a_builtin_step_one(kube, stack, counter):
    """On the real stack: the charge (http) is journaled Started with the reply that asks for it, in one write, and
    its result in a second; the builtin's step is one write; nothing is ever written Pending."""
    setup_agent(kube, stack, counter)
    writes = StatusWrites(kube, stack, "counted-run")
    start(kube, "counted")
    run = kube.wait_phase("counted-run", "Completed")
    assert run["status"]["output"] == "booked, 2+2=4"
    time.sleep(0.5)  # the watch has the last event
    ahead, done, answer = ("Started",), ("Succeeded",), ("Succeeded",) * 3
    assert writes.by_step() == {1: [ahead, done], 2: [done + ahead, done * 2], 3: [answer], 4: [answer]}


@pytest.mark.parametrize("step", [1, 2, 3], ids=lambda s: f"kill-while-asking-step-{s}")
def test_actor_killed_between_steps_resumes_without_repeating(kube, stack, counter, step):
    model = setup_agent(kube, stack, counter)
    start(kube, "calm")
    reference = kube.wait_phase("calm-run", "Completed")
    start(kube, "chaos")
    running = kube.wait_for("taskrun", "chaos-run", lambda o: (o.get("status") or {}).get("actor", {}).get("id"))
    chaos_uid, pid = running["metadata"]["uid"], actor_pid(stack, running["status"]["actor"]["name"])
    # The reference asked every step once; the kill lands while the chaos run waits for step `step`'s reply.
    wait_until(lambda: requests_by_step(stack, model).get(step, 0) >= 2, what=f"step {step} asked")
    os.kill(pid, signal.SIGKILL)

    run = kube.wait_phase("chaos-run", "Completed")
    assert transcript(run) == transcript(reference)
    assert (run["status"]["epoch"], run["status"]["actor"]["restarts"]) == (2, 1)
    # Two runs asked each step once; the killed step was asked once more (its reply was never checkpointed).
    assert requests_by_step(stack, model) == {s: 3 if s == step else 2 for s in range(4)}
    assert [p["body"] for p in counter.of(chaos_uid)] == [{"amount": 5}, {"seat": "1A"}]
    assert any(e["reason"] == "ActorRestarted" for e in kube.events("chaos-run"))
    assert any(e["reason"] == "ActorLost" for e in kube.events("chaos-run"))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read().decode()
    assert f'kubechain_taskrun_recoveries_total{{namespace="{kube.namespace}"}} 1.0' in metrics  # a crash recovery


def test_actor_killed_mid_call_of_a_non_idempotent_tool_reports_interrupted(kube, stack, counter):
    model = setup_agent(kube, stack, counter)
    counter.hold(1)  # the charge
    start(kube, "chaos")
    wait_until(counter.held.is_set, what="the charge in flight")
    kill_actor(stack, kube.get("taskrun", "chaos-run")["status"]["actor"]["name"])
    counter.release()

    run = kube.wait_phase("chaos-run", "Completed")
    charge = run["status"]["toolCallHistory"][0]
    assert (charge["tool"], charge["state"], charge["attempts"]) == ("charge", "Interrupted", 1)
    assert "outcome unknown" in charge["error"]
    assert [p["body"] for p in counter.of(run["metadata"]["uid"])] == [{"amount": 5}, {"seat": "1A"}]  # at most once
    tool_message = transcript(run)[3]
    assert tool_message["role"] == "tool" and "interrupted" in tool_message["content"]
    assert requests_by_step(stack, model)[0] == 1  # the reply asking for the charge was checkpointed first


def test_actor_killed_mid_call_of_an_idempotent_tool_reruns_it_with_the_same_key(kube, stack, counter):
    model = setup_agent(kube, stack, counter)
    counter.hold(2)  # the booking
    start(kube, "chaos")
    wait_until(counter.held.is_set, what="the booking in flight")
    kill_actor(stack, kube.get("taskrun", "chaos-run")["status"]["actor"]["name"])
    counter.release()

    run = kube.wait_phase("chaos-run", "Completed")
    book = run["status"]["toolCallHistory"][1]
    assert (book["state"], book["attempts"]) == ("Succeeded", 2)
    posts = counter.of(run["metadata"]["uid"])
    assert [p["body"] for p in posts] == [{"amount": 5}, {"seat": "1A"}, {"seat": "1A"}]
    assert posts[1]["key"] == posts[2]["key"] == book["idempotencyKey"]  # the service sees one effect
    assert len({p["key"] for p in posts}) == 2
    assert requests_by_step(stack, model) == {0: 1, 1: 1, 2: 1, 3: 1}


def test_operator_killed_mid_run_reattaches_without_a_second_actor(kube, stack, counter):
    model = setup_agent(kube, stack, counter)
    start(kube, "chaos")
    wait_until(lambda: requests_by_step(stack, model).get(1), what="step 1 asked")
    restarts = stack.operator.restarts
    stack.operator.kill()  # SIGKILL: no chance to clean up; it comes back like a Deployment's pod
    stack.operator.wait_restarted(restarts + 1)

    run = kube.wait_phase("chaos-run", "Completed")
    assert (run["status"]["epoch"], run["status"]["actor"]["restarts"]) == (1, 0)
    assert requests_by_step(stack, model) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert len(counter.of(run["metadata"]["uid"])) == 2


def test_ray_head_killed_and_restarted_mid_run(kube, stack, counter):
    model = setup_agent(kube, stack, counter)
    start(kube, "chaos")
    wait_until(lambda: requests_by_step(stack, model).get(1), what="step 1 asked")
    stack.ray.kill_head()  # every actor is gone with it
    kube.wait_for("taskrun", "chaos-run", lambda o: any(
        c["type"] == "RayAvailable" and c["status"] == "False" for c in o["status"].get("conditions", [])),
        what="RayAvailable=False")
    assert kube.get("taskrun", "chaos-run")["status"]["phase"] == "Running"  # nothing is marked Failed
    stack.ray.start()

    run = kube.wait_phase("chaos-run", "Completed", timeout=120)
    assert run["status"]["epoch"] == 2
    assert [p["body"] for p in counter.of(run["metadata"]["uid"])] == [{"amount": 5}, {"seat": "1A"}]
    ray_available = next(c for c in run["status"]["conditions"] if c["type"] == "RayAvailable")
    assert ray_available["status"] == "True"


def test_apiserver_restarted_mid_run(kube, stack, counter):
    model = setup_agent(kube, stack, counter)
    stack.llm.set_script(model, [{**s, "latency": 1.5} for s in SCRIPT])  # the restart lands mid-request
    start(kube, "chaos")
    wait_until(lambda: requests_by_step(stack, model).get(1), what="step 1 asked")
    stack.controlplane.restart_apiserver(down_seconds=3)  # the step's checkpoint finds nobody listening
    # kopf may exit, or hang, on the 404s a restarting apiserver serves before its CRDs are back; in a
    # cluster its liveness probe restarts the pod: do the same, so what is tested is the actor's side.
    kube.wait_for("taskruns", "", lambda o: True, timeout=30)
    restarts = stack.operator.restarts
    stack.operator.kill()
    stack.operator.wait_restarted(restarts + 1)

    run = kube.wait_phase("chaos-run", "Completed", timeout=90)
    assert (run["status"]["epoch"], run["status"]["output"]) == (1, "booked, 2+2=4")
    assert requests_by_step(stack, model) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert [p["body"] for p in counter.of(run["metadata"]["uid"])] == [{"amount": 5}, {"seat": "1A"}]


def test_a_large_context_lives_out_of_line_and_survives_a_kill(kube, stack, counter):
    """~2 MB of tool results: the status stays small, chunks are ConfigMaps owned by the run, a restored
    actor rebuilds the whole context, and `kubechain transcript` prints all of it."""
    model = f"{kube.namespace}-model"
    big = [{"tool_calls": [{"name": "echo", "arguments": {"i": i, "blob": f"{i}" + "x" * 100_000}}]} for i in range(20)]
    stack.llm.set_script(model, big + [{"content": "all echoed", "latency": 0.3}])
    kube.apply([secret(), llm("model", stack.llm.base_url, model),
                {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": "echo"},
                 "spec": {"tools": [{"name": "echo", "description": "echo", "execution": {"builtin": {"name": "echo"}}}]}},
                agent("parrot", "model", ["echo"])])
    kube.apply([task("big", "parrot", "Echo twenty blobs.")])
    running = kube.wait_for("taskrun", "big-run", lambda o: (o.get("status") or {}).get("actor", {}).get("id"))
    pid = actor_pid(stack, running["status"]["actor"]["name"])
    wait_until(lambda: requests_by_step(stack, model).get(12), what="step 12 asked")
    os.kill(pid, signal.SIGKILL)

    run = kube.wait_phase("big-run", "Completed", timeout=120)
    status = run["status"]
    assert status["epoch"] == 2 and status["output"] == "all echoed"
    assert len(json.dumps(status)) < 64 * 1024 and status["sealedContext"]["chunks"] > 0
    configmaps = json.loads(kube.run("get", "configmaps", "-l", "kubechain.dev/taskrun=big-run", "-o", "json").stdout)
    assert len(configmaps["items"]) >= status["sealedContext"]["chunks"]
    assert all(cm["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"] for cm in configmaps["items"])

    printed = subprocess.run([sys.executable, "-m", "kubechain.clients.cli", "transcript", "big-run", "-n", kube.namespace,
                              "--json"], env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)},
                             capture_output=True, text=True, check=True).stdout
    messages = json.loads(printed)
    assert [m["role"] for m in messages] == ["system", "user"] + ["assistant", "tool"] * 20 + ["assistant"]
    tool_messages = [m["content"] for m in messages if m["role"] == "tool"]
    blobs = [int(re.match(r'\{"blob": "(\d+)x', content).group(1)) for content in tool_messages]
    assert blobs == list(range(20))  # every step exactly once, in order, across the kill
    assert all("[truncated: showing 16384 of " in content for content in tool_messages)  # what the LLM read
    assert sum(len(json.dumps(m)) for m in messages) > 2_000_000
    # The journal keeps each whole result (sealed out of line with the context).
    _, _, calls = full_transcript(run, config.new_client_from_config(config_file=str(stack.kubeconfig)))
    assert [json.loads(c.result)["i"] for c in calls] == list(range(20))


def test_deleting_a_running_taskrun_stops_its_actor(kube, stack, counter):
    model = setup_agent(kube, stack, counter)
    stack.llm.set_script(model, [{**s, "latency": 1.0} for s in SCRIPT])
    start(kube, "doomed")
    running = kube.wait_for("taskrun", "doomed-run", lambda o: (o.get("status") or {}).get("actor", {}).get("id"))
    name = running["status"]["actor"]["name"]
    actor_pid(stack, name)  # alive
    kube.run("delete", "taskrun", "doomed-run", "--wait=true")
    wait_until(lambda: all(a["state"] == "DEAD" for a in actors(stack) if a.get("name") == name),
               timeout=20, what="the actor to stop")
    before = len(stack.llm.requests())
    time.sleep(2)  # nothing comes back to life: no new actor, no more LLM calls for it
    assert all(a["state"] == "DEAD" for a in actors(stack) if a.get("name") == name)
    assert [r for r in stack.llm.requests()[before:] if r["model"] == model] == []


def test_a_5mb_2000_message_context_is_rebuilt_exactly_from_the_real_apiserver(kube, stack, monkeypatch):
    """The actor's store against the real kube-apiserver: write a 5 MB run step by step, restore it in a
    new store (as a fresh actor would), compare hashes; the TaskRun object itself stays small."""
    import asyncio
    import hashlib

    from actors.checkpoint import KubeCheckpointStore
    from kubechain.api.runspec import TaskRunRef
    from kubechain.api.v1alpha1 import CallState, FunctionCall, Message, Phase, ToolCall, ToolCallRecord

    monkeypatch.setenv("KUBECONFIG", str(stack.kubeconfig))
    body = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "long"},
            "spec": {"taskRef": {"name": "none"}}}  # no Task: the operator leaves it Pending
    kube.apply([body])
    uid = kube.get("taskrun", "long")["metadata"]["uid"]
    ref = TaskRunRef(namespace=kube.namespace, name="long", uid=uid)

    async def write() -> str:
        store = KubeCheckpointStore(ref, epoch=0)
        status = (await store.load()).model_copy(update={"phase": Phase.RUNNING})
        for i in range(1, 1001):
            call = ToolCall(id=f"c{i}", function=FunctionCall(name="echo", arguments=json.dumps({"i": i})))
            status.context_window += [Message(role="assistant", tool_calls=[call]),
                                      Message(role="tool", tool_call_id=f"c{i}", content=f"{i}" + "z" * 5000)]
            status.tool_call_history.append(ToolCallRecord(id=f"c{i}", step=i, tool="echo", arguments="{}",
                                                           state=CallState.SUCCEEDED, result="ok"))
            status.step = i
            if i % 10 == 0 or i == 1000:  # a checkpoint per 10 steps keeps the test quick; the layout is the same
                await store.save(status)
        return digest(status)

    def digest(status) -> str:
        wire = [m.to_wire() for m in status.context_window] + [c.to_wire() for c in status.tool_call_history]
        return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()

    written = asyncio.run(write())
    restored = asyncio.run(KubeCheckpointStore(ref, epoch=0).load())
    assert len(restored.context_window) == 2000 and digest(restored) == written
    assert sum(len(m.content or "") for m in restored.context_window) > 5_000_000
    assert len(kube.run("get", "taskrun", "long", "-o", "json").stdout) < 64 * 1024


def test_operator_restart_reattaches_even_when_the_run_can_no_longer_be_resolved(kube, stack, counter):
    """The live actor holds everything it needs: a deleted Secret must not keep the new operator from joining it."""
    model = setup_agent(kube, stack, counter)
    # The charge is held until the new operator has joined the actor: the run is surely in flight however long
    # the new operator takes to get a Ray Client connection.
    counter.hold(1, seconds=300)
    start(kube, "chaos")
    wait_until(counter.held.is_set, what="the charge in flight")
    kube.run("delete", "secret", "llm-key")
    restarts = stack.operator.restarts
    stack.operator.kill()
    stack.operator.wait_restarted(restarts + 1)
    kube.wait_for("events", "", lambda o: any(e["reason"] == "ActorAttached" and
                                              e["involvedObject"]["name"] == "chaos-run" for e in o["items"]),
                  timeout=60, what="ActorAttached")  # the new operator joined the live actor
    counter.release()

    run = kube.wait_phase("chaos-run", "Completed")
    assert (run["status"]["epoch"], run["status"]["actor"]["restarts"]) == (1, 0)
    assert requests_by_step(stack, model) == {0: 1, 1: 1, 2: 1, 3: 1}
