"""Leader election's rules (kubechain/core/leases.py) and the certificate rotation plan
(kubechain/core/certrotation.py), as pure functions."""
from __future__ import annotations

import datetime
import json

import pytest

from kubechain.core.certrotation import Bundle, Step, plan
from kubechain.core.leases import Observed, Record, claimed, may_take, observe, released

HELD = Record(holder="a", duration_seconds=15, acquire_time="t0", renew_time="t1", transitions=0)


@pytest.mark.parametrize("record,identity,now,expected", [
    (None, "b", 0, True),                                            # no Lease yet
    (HELD, "a", 1, True),                                            # my own: renew
    (HELD, "b", 14.9, False),                                        # another's, renewed 14.9 s ago as I saw it
    (HELD, "b", 15, True),                                           # another's, not renewed for its duration
    (released(HELD, "t2"), "b", 0.1, True),                          # released: take it at once
], ids=["absent", "own", "held", "expired", "released"])
def test_who_may_take_the_lease(record, identity, now, expected):
    assert may_take(Observed(record, 0.0), identity, now) is expected


def test_the_wait_counts_from_when_the_candidate_saw_a_change_not_the_holders_clock():
    seen = observe(None, HELD, now=100.0)
    assert observe(seen, HELD, now=110.0).since == 100.0  # unchanged: the clock runs on
    renewed = Record(**{**HELD.__dict__, "renew_time": "t9"})  # a renewal, whatever its timestamp says
    assert observe(seen, renewed, now=110.0).since == 110.0
    assert not may_take(observe(seen, renewed, now=110.0), "b", 120.0)


@pytest.mark.parametrize("before,identity,transitions,acquired", [
    (None, "a", 0, "t5"), (HELD, "a", 0, "t0"), (HELD, "b", 1, "t5"), (released(HELD, "t3"), "b", 0, "t5"),
], ids=["create", "renew", "take-over", "take-released"])
def test_claiming_counts_transitions_and_keeps_the_acquire_time_of_a_renewal(before, identity, transitions, acquired):
    record = claimed(before, identity, "t5", 15)
    assert (record.holder, record.renew_time, record.acquire_time, record.transitions) == (identity, "t5", acquired,
                                                                                           transitions)


def test_a_record_round_trips_through_the_lease_spec():
    assert Record.from_spec(HELD.to_spec()) == HELD


T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
OVERLAP = datetime.timedelta(minutes=2)


def bundle(staged=False, cas=1, changed=T0):
    return Bundle(not_before=T0, not_after=T0 + 90 * DAY, staged=staged, trusted_cas=cas, changed_at=changed)


@pytest.mark.parametrize("state,now,step", [
    (bundle(), T0 + 59 * DAY, Step.KEEP),                                 # young
    (bundle(), T0 + 61 * DAY, Step.STAGE),                                # past two thirds: new CA into the bundle
    (bundle(True, 2, T0 + 61 * DAY), T0 + 61 * DAY + OVERLAP / 2, Step.KEEP),     # the bundle not settled yet
    (bundle(True, 2, T0 + 61 * DAY), T0 + 61 * DAY + OVERLAP, Step.PROMOTE),      # every replica and apiserver trusts it
    (bundle(True, 2, T0 + 89 * DAY), T0 + 91 * DAY, Step.PROMOTE),               # expired: no reason to wait
    (bundle(False, 2, T0), T0 + OVERLAP / 2, Step.KEEP),                  # just promoted: old CA still trusted
    (bundle(False, 2, T0), T0 + OVERLAP, Step.TRIM),                      # every replica serves the new one
], ids=["young", "stage", "staged-settling", "promote", "promote-expired", "promoted-settling", "trim"])
def test_rotation_steps(state, now, step):
    assert plan(state, now, OVERLAP) is step


class FakeLeases:
    """The Lease API as LeaderElector uses it (CustomObjectsApi): one object, resourceVersion-checked writes."""

    def __init__(self):
        self.obj, self.version, self.failing = None, 0, False

    def _check(self):
        if self.failing:
            raise OSError("the apiserver does not answer")

    def get_namespaced_custom_object(self, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        self._check()
        if self.obj is None:
            raise ApiException(status=404)
        return type("Response", (), {"data": json.dumps(self.obj)})()

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
        self._check()
        return self._write(body)

    def replace_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kwargs):
        from kubernetes.client.exceptions import ApiException
        self._check()
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise ApiException(status=409)
        return self._write(body)

    def _write(self, body):
        self.version += 1
        self.obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return self.obj


def elector(api: FakeLeases, identity: str):
    from kubechain.operator.leader import LeaderElector
    from kubechain.operator.settings import LeaderSettings

    settings = LeaderSettings(lease="ns/lease", identity=identity, duration_seconds=2, renew_deadline_seconds=0.5,
                              retry_seconds=0.05)
    candidate = LeaderElector(settings)
    candidate._api = api
    return candidate


def test_one_candidate_leads_the_other_waits_and_takes_over_once_renewals_stop():
    import asyncio

    async def scenario():
        api = FakeLeases()
        a, b = elector(api, "a"), elector(api, "b")
        await a.acquire()
        assert not await b._try()  # held, renewed just now
        keeping = asyncio.create_task(a.keep())
        await asyncio.sleep(0.3)
        assert not await b._try() and api.obj["spec"]["holderIdentity"] == "a"
        api.failing = True  # a cannot renew: it gives up within its renew deadline...
        await asyncio.wait_for(keeping, 1)
        assert not a.leading
        api.failing = False
        waited = asyncio.get_running_loop().time()
        await asyncio.wait_for(b.acquire(), 5)  # ...and b takes over once the lease duration has passed
        assert asyncio.get_running_loop().time() - waited > 0.2
        assert api.obj["spec"]["holderIdentity"] == "b" and api.obj["spec"]["leaseTransitions"] == 1

    asyncio.run(scenario())


def test_a_released_lease_is_taken_at_the_next_try():
    import asyncio

    async def scenario():
        api = FakeLeases()
        a, b = elector(api, "a"), elector(api, "b")
        await a.acquire()
        await b._try()  # b has seen a's record
        await a.release()
        assert api.obj["spec"]["holderIdentity"] == "" and await b._try()

    asyncio.run(scenario())


def test_a_leader_that_sees_another_holder_stops_at_once():
    import asyncio

    async def scenario():
        api = FakeLeases()
        a = elector(api, "a")
        await a.acquire()
        api.obj["spec"]["holderIdentity"] = "intruder"  # e.g. an admin's edit, or a partition that healed late
        await asyncio.wait_for(a.keep(), 0.5)
        assert not a.leading

    asyncio.run(scenario())


def test_renewals_do_not_wait_behind_the_loops_other_blocking_calls():
    """A burst of reconciles fills the loop's default executor with waiting calls and keeps the loop itself busy: a
    renewal queued behind them lost the Lease (the replicas then handed it back and forth under a 1,000-Task
    burst). The elector renews on its own thread."""
    import asyncio
    import time
    from concurrent.futures import ThreadPoolExecutor

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        api = FakeLeases()
        a = elector(api, "a")
        await a.acquire()
        busy = [asyncio.create_task(asyncio.to_thread(time.sleep, 0.4)) for _ in range(3)]  # 1.2 s of queued work
        keeping = asyncio.create_task(a.keep())
        renewals = api.version
        await asyncio.sleep(0.8)  # beyond the renew deadline (0.5 s)
        assert not keeping.done() and a.leading and api.version > renewals + 3
        renewals = api.version
        time.sleep(0.8)  # the loop itself busy for longer than the deadline: a burst's handlers
        await asyncio.sleep(0)
        assert not keeping.done() and a.leading and api.version > renewals + 3
        keeping.cancel()
        await a.release()  # renewals end, then the release is written
        assert api.obj["spec"]["holderIdentity"] == ""
        await asyncio.gather(*busy)

    asyncio.run(scenario())
