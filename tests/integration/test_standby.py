"""Standby actors (KUBECHAIN_STANDBY_ACTORS): warm actors that new runs take instead of waiting for a Ray
worker process, under the same durability rules as any actor."""
from __future__ import annotations

import json
import os
import signal

import pytest

from kubechain.operator.raygateway import STANDBY_PREFIX

from .chaos import actor_pid, actors, wait_until
from .conftest import task
from .test_human_input import ASK, helpdesk
from .test_durability import counter, requests_by_step, setup_agent, start  # noqa: F401  (counter: a fixture)

pytestmark = pytest.mark.integration


def standbys(stack) -> list[dict]:
    return [a for a in actors(stack) if a["state"] == "ALIVE" and a.get("name", "").startswith(STANDBY_PREFIX)]


def pool_of_two(stack, refill_seconds: str | None = None):
    stack.operator.reconfigure(KUBECHAIN_STANDBY_ACTORS="2", KUBECHAIN_STANDBY_REFILL_SECONDS=refill_seconds)
    try:
        wait_until(lambda: len(standbys(stack)) >= 2, timeout=180,  # after an operator restart: Ray Client may be slow
                   what="two standby actors")
        yield
    finally:  # the session's other tests expect no pool, even when this setup failed
        stack.operator.reconfigure(KUBECHAIN_STANDBY_ACTORS=None, KUBECHAIN_STANDBY_REFILL_SECONDS=None)
        for actor in standbys(stack):
            if actor.get("pid"):
                os.kill(actor["pid"], signal.SIGKILL)


@pytest.fixture
def two_standbys(stack):
    yield from pool_of_two(stack)


@pytest.fixture
def two_kept(stack):
    """A pool of two that only ended runs' actors refill."""
    yield from pool_of_two(stack, refill_seconds="600")


def test_a_run_takes_a_standby_and_survives_its_kill(kube, stack, counter, two_standbys):
    model = setup_agent(kube, stack, counter)
    counter.hold(2)  # the booking (idempotent) stays in flight until released
    start(kube, "warm")
    running = kube.wait_for("taskrun", "warm-run", lambda o: (o.get("status") or {}).get("actor", {}).get("id"))
    taken = running["status"]["actor"]["name"]
    assert taken.startswith(STANDBY_PREFIX)  # a warm actor, not a new one named after the run
    wait_until(lambda: len({a["name"] for a in standbys(stack)} - {taken}) >= 2, timeout=60, what="the pool refilled")

    wait_until(counter.held.is_set, timeout=60, what="the booking in flight")
    os.kill(actor_pid(stack, taken), signal.SIGKILL)  # the run is restored on another actor, from its checkpoint
    counter.release()
    run = kube.wait_phase("warm-run", "Completed", timeout=120)
    assert run["status"]["epoch"] == 2 and run["status"]["output"] == "booked, 2+2=4"
    assert run["status"]["actor"]["name"] != taken and requests_by_step(stack, model) == {0: 1, 1: 1, 2: 1, 3: 1}
    # The charge ran once; the booking, in flight at the kill and idempotent, once more with the same key.
    assert [p["body"] for p in counter.of(run["metadata"]["uid"])] == [{"amount": 5}, {"seat": "1A"}, {"seat": "1A"}]


def test_ended_runs_hand_their_actor_on_and_a_name_in_an_old_status_leads_nowhere(kube, stack, two_kept):
    helpdesk(kube, stack, [{"tool_calls": [{"name": "ask", "arguments": {"question": "Which colour?"}}]},
                           {"content": "You chose {last_tool_result}."}], [ASK])
    pool = {a["name"]: a["pid"] for a in standbys(stack)}
    paused = {}
    for name in ("one", "two", "three"):  # each run pauses: its actor's part ends, and the next run takes it
        kube.apply([task(name, "helpdesk", "Pick a colour for me")])
        paused[name] = kube.wait_phase(f"{name}-run", "PausedForUserInput")["status"]
        assert paused[name]["actor"]["name"] in pool
    assert len({p["actor"]["name"] for p in paused.values()}) == 2  # three runs on the two warm processes

    kube.run("patch", "taskrun", "one-run", "--type", "merge", "-p", '{"spec": {"cancel": true}}')
    kube.wait_phase("one-run", "Failed")
    for name in ("two", "three"):  # resumed: on an actor that holds this run, not on whatever its old name names now
        call = paused[name]["toolCallHistory"][0]["idempotencyKey"]
        kube.run("patch", "taskrun", f"{name}-run", "--type", "merge", "-p",
                 json.dumps({"spec": {"responses": {call: {"answer": name}}}}))
        done = kube.wait_phase(f"{name}-run", "Completed")
        assert done["status"]["output"] == f"You chose {name}." and done["status"]["epoch"] == 2
    # The cancel killed no process that had moved on to another run, and no run started a new one.
    wait_until(lambda: {a["name"]: a["pid"] for a in standbys(stack)} == pool, timeout=20, what="the same two processes")


def test_a_bursts_actors_linger_for_the_runs_after_it_then_the_pool_shrinks_back(kube, stack):
    """Beyond the pool's size, an ended run's actor stays pooled for KUBECHAIN_STANDBY_LINGER_SECONDS: the runs that
    come next take it instead of starting a process; then the pool is back to its size."""
    stack.operator.reconfigure(KUBECHAIN_STANDBY_ACTORS="1", KUBECHAIN_STANDBY_REFILL_SECONDS="600",
                               KUBECHAIN_STANDBY_LINGER_SECONDS="20")
    try:
        wait_until(lambda: len(standbys(stack)) >= 1, timeout=180, what="one standby actor")
        helpdesk(kube, stack, [{"content": "done", "latency": 12}], [ASK], name="burst")  # all at once
        kube.apply([task(f"first-{i}", "burst", f"first {i}") for i in range(3)])  # three at once: two new actors
        first = {kube.wait_phase(f"first-{i}-run", "Completed")["status"]["actor"]["name"] for i in range(3)}
        assert len(first) == 3
        wait_until(lambda: {a["name"] for a in standbys(stack)} == first, timeout=30, what="all three pooled")
        kube.apply([task(f"next-{i}", "burst", f"next {i}") for i in range(3)])
        taken = {kube.wait_phase(f"next-{i}-run", "Completed")["status"]["actor"]["name"] for i in range(3)}
        assert taken == first  # no process started for them
        wait_until(lambda: len(standbys(stack)) == 1, timeout=90, what="the pool back to its size")
    finally:
        stack.operator.reconfigure(KUBECHAIN_STANDBY_ACTORS=None, KUBECHAIN_STANDBY_REFILL_SECONDS=None,
                                   KUBECHAIN_STANDBY_LINGER_SECONDS=None)
        for actor in standbys(stack):
            if actor.get("pid"):
                os.kill(actor["pid"], signal.SIGKILL)
