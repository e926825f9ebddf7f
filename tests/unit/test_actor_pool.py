"""The TaskRun actor's pool rules, without Ray: a pooled actor holds one run at a time, goes back to the pool
only after its run ended, and a run's own actor ends with its run."""
from __future__ import annotations

import asyncio
import time

import pytest

import actors.taskrun_actor as module
from actors.taskrun_actor import RUNS_PER_PROCESS, TaskRunActor, WrongActor
from kubechain.api.runspec import RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import LLMSpec


def spec(uid: str, epoch: int = 1) -> RunSpec:
    return RunSpec(taskrun=TaskRunRef(namespace="ns", name=f"run-{uid}", uid=uid), agent="a", epoch=epoch,
                   llm=LLMSpec(model="m"), system_prompt="s", user_input="u")


@pytest.fixture
def exits(monkeypatch) -> list[float]:
    """Delays of the exits the actor scheduled (none happens: the test has no Ray)."""
    scheduled: list[float] = []

    class Handle:
        def cancel(self) -> None:
            scheduled.append(-1.0)

    def exit_soon(delay: float) -> Handle:
        scheduled.append(delay)
        return Handle()

    monkeypatch.setattr(module, "_exit_soon", exit_soon)
    return scheduled


@pytest.fixture
def finished(monkeypatch) -> asyncio.Event:
    """Runs end when the test sets this."""
    done = asyncio.Event()

    async def main(self) -> str:
        await done.wait()
        return f"Completed:{self.spec.taskrun.uid}"

    monkeypatch.setattr(TaskRunActor, "_main", main)
    return done


def test_a_pooled_actor_runs_one_run_then_returns_to_the_pool(exits, finished):
    async def scenario():
        actor = TaskRunActor()
        assert not await actor.holds()
        with pytest.raises(WrongActor):
            await actor.run()  # joining a pooled actor that holds no run
        first = asyncio.create_task(actor.run(spec("u1")))
        await asyncio.sleep(0)
        assert await actor.holds("u1") and await actor.holds() and not await actor.holds("u2")
        assert not await actor.recycle()  # its run goes on: it is not taken from it
        with pytest.raises(WrongActor):
            await actor.run(spec("u2"))  # never two runs at once
        finished.set()
        assert await first == "Completed:u1" and await actor.run() == "Completed:u1"  # a late join gets the result
        assert exits == [module.RECYCLE_GRACE_SECONDS]  # ends itself unless taken back
        assert await actor.recycle() and exits[-1] == -1.0  # taken back: that exit is cancelled
        assert not await actor.holds("u1")  # a status naming it no longer leads to it
        assert await actor.run(spec("u2")) == "Completed:u2"

    asyncio.run(scenario())


def test_a_run_own_actor_ends_with_it(exits, finished):
    async def scenario():
        actor = TaskRunActor(pooled=False)  # its run comes with run(), never the constructor (Ray's GCS keeps that)
        with pytest.raises(WrongActor):
            await actor.run()
        finished.set()
        assert await actor.run(spec("u1")) == "Completed:u1" and await actor.run() == "Completed:u1"
        assert exits == [0.2, 0.2] and not await actor.recycle()

    asyncio.run(scenario())


def test_a_pooled_actor_ends_after_its_share_of_runs(exits, finished):
    async def scenario():
        actor = TaskRunActor()
        finished.set()
        for n in range(RUNS_PER_PROCESS - 1):
            await actor.run(spec(f"u{n}"))
            assert await actor.recycle()
        await actor.run(spec("last"))
        assert not await actor.recycle() and exits[-1] == 0.2

    asyncio.run(scenario())


def test_a_runs_secrets_reach_its_actor_by_method_call_never_as_a_detached_actors_constructor_argument(monkeypatch):
    """Ray keeps a detached actor's creation task (constructor arguments included) in the GCS for the actor's lifetime
    (its ActorTaskSpec table, in Redis with gcs-ft); a method call's arguments are not kept."""
    from pydantic import SecretStr

    from kubechain.operator.raygateway import RayGateway
    from kubechain.operator.settings import RaySettings

    created, called = [], []

    class Handle:
        _actor_id = bytes.fromhex("ff")

        class run:  # noqa: N801  (Ray's method handle)
            @staticmethod
            def remote(spec):
                called.append(spec)

    class Remote:
        def options(self, **options):
            created.append(options)
            return self

        def remote(self, *args, **kwargs):
            created.append((args, kwargs))
            return Handle()

    for standby in (0, 2):
        gateway = RayGateway(RaySettings(standby_actors=standby, standby_refill_seconds=3600))
        monkeypatch.setattr(gateway, "_connect_or_raise", lambda: None)
        monkeypatch.setattr(gateway, "_remote_class", lambda: Remote())
        secret = spec("u1").model_copy(update={"api_key": SecretStr("sk-live-1234")})
        handle, _ = gateway.create(secret)
        gateway.join(handle, secret)
    constructed = [entry for entry in created if isinstance(entry, tuple)]
    assert constructed == [((), {"pooled": False}), ((), {"pooled": True})]
    assert "sk-live-1234" not in repr(created)
    assert [s.api_key.get_secret_value() for s in called] == ["sk-live-1234"] * 2  # with the run, by method call


def test_actors_beyond_the_pool_linger_for_queued_runs_then_end(monkeypatch):
    """In a burst, the actors of ended runs stay pooled for the next runs (a process start is ~1 s of CPU) beyond
    `standby_actors`, for `standby_linger_seconds`; then the pool is back to its size. 0: they end at once."""
    import time

    import ray

    from kubechain.operator.raygateway import STANDBY_PREFIX, RayGateway
    from kubechain.operator.settings import RaySettings

    killed: list = []
    monkeypatch.setattr(ray, "kill", killed.append)
    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: ref)

    class Handle:
        _actor_id = bytes.fromhex("ff")

        class recycle:  # noqa: N801  (Ray's method handle)
            @staticmethod
            def remote():
                return True  # let go of its run: back in the pool

    def pool(linger: float) -> tuple[RayGateway, list[Handle]]:
        gateway = RayGateway(RaySettings(standby_actors=1, standby_refill_seconds=3600, standby_linger_seconds=linger))
        monkeypatch.setattr(gateway, "_connect_or_raise", lambda: None)
        handles = [Handle() for _ in range(3)]
        for i, handle in enumerate(handles):
            gateway.recycle(f"{STANDBY_PREFIX}{i}", handle)
        return gateway, handles

    gateway, handles = pool(linger=0.3)
    assert killed == []  # one fills the pool, two linger
    taken, _ = gateway.create(spec("u1"))  # a queued run takes one of them
    deadline = time.monotonic() + 10
    while len(killed) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # another trim would have ended another by now
    assert taken is handles[0] and len(killed) == 1 and killed[0] is not taken
    assert gateway.pool.idle() == 1  # the pool's size again

    killed.clear()
    gateway, handles = pool(linger=0)
    assert killed == handles[1:]  # no linger: beyond the pool's size they end at once


class Started:
    """A fake Ray: the actor handles it made, and each one's first ping, answered when the test says."""

    def __init__(self):
        from concurrent.futures import Future

        self.handles: list = []
        self.Future = Future

    def options(self, **options):
        return self

    def remote(self, *args, **kwargs):
        pinged = self.Future()

        class Handle:
            _actor_id = bytes.fromhex("ff")
            up = pinged  # the actor answers its first ping: its process started

            class ping:  # noqa: N801  (Ray's method handle)
                @staticmethod
                def remote():
                    return type("Ref", (), {"future": staticmethod(lambda: pinged)})()

            class recycle:  # noqa: N801
                @staticmethod
                def remote():
                    return True

        self.handles.append(Handle())
        return self.handles[-1]


def gateway_of(monkeypatch, **settings):
    import ray

    from kubechain.operator.raygateway import RayGateway
    from kubechain.operator.settings import RaySettings

    monkeypatch.setattr(ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(ray, "kill", lambda handle: None)
    gateway, ray_ = RayGateway(RaySettings(standby_refill_seconds=3600, **settings)), Started()
    monkeypatch.setattr(gateway, "_connect_or_raise", lambda: None)
    monkeypatch.setattr(gateway, "_remote_class", lambda: ray_)
    return gateway, ray_


def test_at_most_max_actor_starts_processes_start_at_once_the_next_run_waits_for_a_start_to_finish(monkeypatch):
    from kubechain.operator.raygateway import RayUnavailable

    gateway, started = gateway_of(monkeypatch, max_actor_starts=1)
    woken: list[str] = []
    first = gateway.pool.ask("ns", 0, lambda: woken.append("first"))
    second = gateway.pool.ask("ns", 0, lambda: woken.append("second"))
    assert first.granted and not second.granted
    gateway.create(spec("u1"), first)
    with pytest.raises(RayUnavailable, match="KUBECHAIN_MAX_ACTOR_STARTS"):
        gateway.create(spec("u3"))  # would wait: refused rather than started
    assert len(started.handles) == 1 and gateway.pool.starts() == (1, 1, 1)
    started.handles[0].up.set_result(True)  # the first actor answers: its start is over
    assert woken == ["second"] and second.granted
    gateway.create(spec("u2"), second)
    assert len(started.handles) == 2 and gateway.pool.starts() == (1, 1, 0)


def test_a_waiting_run_gets_an_ended_runs_actor_handed_over_and_no_process_starts(monkeypatch):
    from kubechain.operator.raygateway import STANDBY_PREFIX

    gateway, started = gateway_of(monkeypatch, max_actor_starts=1, standby_actors=1, standby_linger_seconds=30)
    first = gateway.pool.ask("ns", 0, lambda: None)
    handle, ref = gateway.create(spec("u1"), first)
    woken: list[str] = []
    second = gateway.pool.ask("ns", 0, lambda: woken.append("second"))
    assert ref.name.startswith(STANDBY_PREFIX) and not second.granted
    gateway.recycle(ref.name, handle)  # the first run ended before its actor even answered a ping
    assert woken == ["second"] and second.granted
    taken, again = gateway.create(spec("u2"), second)
    assert taken is handle and again.name == ref.name and len(started.handles) == 1  # no process started
    assert gateway.pool.idle() == 0


def test_a_start_that_never_answers_frees_its_slot_after_the_start_timeout(monkeypatch):
    gateway, _ = gateway_of(monkeypatch, max_actor_starts=1)
    gateway.pool.start_timeout = 0.2
    gateway.create(spec("u1"), gateway.pool.ask("ns", 0, lambda: None))
    waiting = gateway.pool.ask("ns", 0, lambda: None)
    assert not waiting.granted
    deadline = time.monotonic() + 10
    while not waiting.granted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waiting.granted


def test_the_start_bound_is_the_ray_clusters_cpus_unless_set():
    from kubechain.operator.actorpool import ActorPool
    from kubechain.operator.settings import RaySettings

    pool = ActorPool(RaySettings(max_actor_starts=0), lambda name: None)
    pool.bound(2.0)
    assert pool.starts()[1] == 2
    pool.bound(0.0)
    assert pool.starts()[1] == 1  # a head with no CPUs of its own still starts actors, one at a time
    pool = ActorPool(RaySettings(max_actor_starts=5), lambda name: None)
    pool.bound(2.0)
    assert pool.starts()[1] == 5
