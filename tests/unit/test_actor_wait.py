"""A run's wait in the actor line, as its supervisor's applier does it (controllers/taskrun/effects.py): on the
operator's event loop without blocking it, said after a moment (ActorQueued), woken from the thread that frees a
start, and given back when the supervisor stops."""
from __future__ import annotations

import asyncio
import threading

from kubechain.api.runspec import RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import ActorRef, LLMSpec
from kubechain.core.observation import ActorCreated, ActorQueued

REF = TaskRunRef(namespace="ns", name="run", uid="u1")
SPEC = RunSpec(taskrun=REF, agent="a", epoch=1, llm=LLMSpec(model="m"), system_prompt="s", user_input="u")


class FakeRay:
    """The gateway's create over the real pool and line; no Ray."""

    def __init__(self, limit: int):
        from kubechain.operator.actorpool import ActorPool
        from kubechain.operator.settings import RaySettings

        self.pool = ActorPool(RaySettings(max_actor_starts=limit), lambda name: object())
        self.created: list[str] = []

    def create(self, spec, waiter):
        assert self.pool.take(waiter) is None  # a start slot
        self.created.append(spec.taskrun.uid)
        return object(), ActorRef(name="run-actor", namespace="kc", id="ff")


def applier_of(monkeypatch, limit: int = 1):
    from kubechain.operator.controllers.taskrun import effects
    from kubechain.operator.settings import Settings
    from kubechain.operator.state import OperatorState

    monkeypatch.setattr(effects, "LINE_PATIENCE_SECONDS", 0.1)
    ray = FakeRay(limit)
    return effects.Applier(OperatorState(settings=Settings(), kube=None, ray=ray), REF, {}), ray


def test_a_run_beyond_the_starts_waits_says_so_and_is_woken_by_the_start_that_finishes(monkeypatch):
    applier, ray = applier_of(monkeypatch)

    async def scenario():
        other = ray.pool.ask("ns", 0, lambda: None)  # another run's start holds the only slot
        assert other.granted
        ticks = 0

        async def ticking():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(ticking())
        fact = await applier._create(SPEC, 0)
        assert fact == ActorQueued(SPEC, limit=1) and ray.created == [] and ticks >= 5  # the loop went on
        assert ray.pool.starts() == (1, 1, 1)
        threading.Thread(target=ray.pool.start_ended).start()  # the other actor answered: its slot is this run's
        fact = await asyncio.wait_for(applier._create(SPEC, 0), timeout=5)
        assert isinstance(fact, ActorCreated) and ray.created == ["u1"] and applier.waiter is None
        ticker.cancel()

    asyncio.run(scenario())


def test_a_supervisor_that_stops_while_waiting_gives_its_place_and_grant_on(monkeypatch):
    applier, ray = applier_of(monkeypatch)

    async def scenario():
        other = ray.pool.ask("ns", 0, lambda: None)
        assert isinstance(await applier._create(SPEC, 0), ActorQueued)
        behind = ray.pool.ask("ns", 0, lambda: None)
        ray.pool.withdraw(other)  # the slot goes to this run, first in line; it stops before taking it
        assert applier.waiter.granted and not behind.granted
        applier.close()
        assert behind.granted and ray.pool.starts() == (1, 1, 0)  # passed on, nothing leaked

    asyncio.run(scenario())
