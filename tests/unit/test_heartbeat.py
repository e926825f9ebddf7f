"""The supervisor's heartbeat, without Ray: while it waits for an actor's run it pings the actor; an actor whose
ping goes unanswered for `wedged_seconds` is ActorUnresponsive (the reconciler kills and replaces it), one that
answers is waited for as before."""
from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from actors.taskrun_actor import TaskRunActor
from kubechain.operator import raygateway
from kubechain.operator.raygateway import ActorUnresponsive, Heartbeat, RayGateway
from kubechain.operator.settings import RaySettings


class Ref:
    """A Ray ObjectRef's `future()`; `answer` set: a method whose event loop turns (answered at once)."""

    def __init__(self, answer=None):
        self._future: concurrent.futures.Future = concurrent.futures.Future()
        if answer is not None:
            self._future.set_result(answer)

    def future(self):
        return self._future


class Method:
    def __init__(self, answers: int):
        self.answers, self.calls = answers, 0

    def remote(self):
        self.calls += 1
        return Ref(True if self.calls <= self.answers else None)


class Handle:
    """An actor whose first `answers` pings are answered, then none."""

    def __init__(self, answers: int):
        self.ping = Method(answers)


class OldHandle:
    """An actor of an operator version before the heartbeat: no `ping`."""


def gateway() -> RayGateway:
    ray = RayGateway(RaySettings(address="127.0.0.1:1", health_interval_seconds=0.01, wedged_seconds=0.05))
    ray.reachable = lambda: True  # no head to probe here
    return ray


def test_an_actor_that_stops_answering_pings_is_unresponsive():
    handle = Handle(answers=1)
    with pytest.raises(ActorUnresponsive, match="has not answered a liveness ping for 0 s .*KUBECHAIN_ACTOR_WEDGED_"
                                                "SECONDS is 0.05.*its event loop is blocked"):
        asyncio.run(gateway().wait(Ref(), handle))  # a run that never returns
    assert handle.ping.calls == 2  # one ping out at a time


def test_the_first_ping_gets_longer_as_it_waits_behind_the_actors_creation(monkeypatch):
    # a slow worker start is not a wedged loop (replacing it only starts another), one that never serves is
    clock = [100.0]
    monkeypatch.setattr(raygateway.time, "monotonic", lambda: clock[0])

    async def overdue_at(heartbeat, seconds):
        clock[0] = 100.0 + seconds
        await asyncio.sleep(0)  # an answer reaches the heartbeat through the loop, as Ray's would
        return await heartbeat.overdue()

    async def main():
        starting, serving = Heartbeat(Handle(answers=0), 30), Heartbeat(Handle(answers=1), 30)
        assert await overdue_at(starting, 0) is None and await overdue_at(serving, 0) is None  # pings out
        assert await overdue_at(starting, 100) is None and await overdue_at(starting, 121) == 121
        assert await overdue_at(serving, 8) is None  # answered: the next ping goes out
        assert await overdue_at(serving, 38) is None and await overdue_at(serving, 39) == 31
    asyncio.run(main())


def test_an_actor_that_answers_is_waited_for_until_its_run_returns():
    handle, run = Handle(answers=10**6), Ref()

    async def main():
        waiting = asyncio.ensure_future(gateway().wait(run, handle))
        while handle.ping.calls < 5:  # pinged again and again, never found wedged
            await asyncio.sleep(0.01)
        run.future().set_result("Completed")
        return await waiting
    assert asyncio.run(main()) == "Completed"


@pytest.mark.parametrize("handle", [None, OldHandle()], ids=["no-handle", "actor-without-ping"])
def test_without_a_ping_the_wait_is_as_before(handle):
    run = Ref()

    async def main():
        waiting = asyncio.ensure_future(gateway().wait(run, handle))
        await asyncio.sleep(0.2)  # longer than wedged_seconds: nothing to find it wedged by
        run.future().set_result("Failed")
        return await waiting
    assert asyncio.run(main()) == "Failed"


def test_the_actor_answers_pings_while_its_run_is_in_flight():
    assert asyncio.run(TaskRunActor().ping()) is True
