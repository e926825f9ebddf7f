"""Standby actors (KUBECHAIN_STANDBY_ACTORS): warm actors that new runs take instead of waiting for a Ray
worker process, under the same durability rules as any actor."""
from __future__ import annotations

import os
import signal

import pytest

from kubechain.raygateway import STANDBY_PREFIX

from .chaos import actor_pid, actors, wait_until
from .test_durability import counter, requests_by_step, setup_agent, start  # noqa: F401  (counter: a fixture)

pytestmark = pytest.mark.integration


def standbys(stack) -> list[dict]:
    return [a for a in actors(stack) if a["state"] == "ALIVE" and a.get("name", "").startswith(STANDBY_PREFIX)]


@pytest.fixture
def two_standbys(stack):
    stack.operator.reconfigure(KUBECHAIN_STANDBY_ACTORS="2")
    wait_until(lambda: len(standbys(stack)) >= 2, timeout=60, what="two standby actors")
    yield
    stack.operator.reconfigure(KUBECHAIN_STANDBY_ACTORS=None)
    for actor in standbys(stack):  # the session's other tests expect none
        if actor.get("pid"):
            os.kill(actor["pid"], signal.SIGKILL)


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
