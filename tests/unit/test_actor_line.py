"""The actor line (kubechain/core/actorline.py): at most `limit` actor processes start at once; runs beyond wait, and
the first ended run's actor back or start slot freed goes to the run first in line, directly."""
from __future__ import annotations

from kubechain.core.actorline import SLOT, ActorLine, Waiter


def asked(line: ActorLine, *namespaces: str, priority: int = 0) -> list[Waiter]:
    waiters = [Waiter(ns, priority) for ns in namespaces]
    for waiter in waiters:
        line.ask(waiter)
    return waiters


def test_no_more_than_the_limit_start_at_once():
    line = ActorLine(limit=2)
    a, b, c, d = asked(line, "ns", "ns", "ns", "ns")
    assert (a.granted, b.granted, c.granted, d.granted) == (True, True, False, False)
    assert a.actor is SLOT and line.starting == 2 and line.waiting() == 2
    assert line.started() is c and c.granted and c.actor is SLOT  # a's start finished: its slot goes on
    assert line.starting == 2  # still two in flight: b's and c's
    assert line.started() is d and line.started() is None and line.started() is None
    assert line.starting == 0  # nobody waits: the slots free


def test_an_ended_runs_actor_goes_to_the_run_first_in_line_before_any_start():
    line = ActorLine(limit=1)
    first, second, third = asked(line, "ns", "ns", "ns")
    assert line.returned("actor-1") is second and second.actor == "actor-1"  # handed over, not pooled
    assert line.free == [] and line.starting == 1  # no start for it: the slot is still the first's
    assert line.started() is third and third.actor is SLOT  # whichever comes first: here the slot
    assert line.returned("actor-2") is None and line.free == ["actor-2"]  # nobody waits: pooled
    late = Waiter("ns")
    assert line.ask(late) and late.actor == "actor-2" and line.free == []  # a pooled actor before a start


def test_first_come_first_served_within_a_namespace():
    line = ActorLine(limit=1)
    _, *queued = asked(line, "ns", "ns", "ns", "ns")
    assert [line.position(w) for w in queued] == [1, 2, 3]
    assert [line.returned(f"a{i}") for i in range(3)] == queued


def test_a_run_in_another_namespace_is_served_before_the_rest_of_a_burst():
    """As admission goes round the namespaces (queueing.py): a burst's queued runs do not all go first."""
    line = ActorLine(limit=1)
    burst = asked(line, *["burst"] * 6)
    line.returned("a0")  # burst[1] served
    [other] = asked(line, "other")
    assert line.position(other) == 1
    assert line.returned("a1") is other
    assert [line.returned(f"b{i}") for i in range(4)] == burst[2:]


def test_higher_priority_first():
    line = ActorLine(limit=1)
    asked(line, "ns", "ns")
    [urgent] = asked(line, "ns", priority=10)
    assert line.started() is urgent


def test_a_run_that_stops_waiting_leaves_the_line_and_passes_on_what_it_was_granted():
    line = ActorLine(limit=1)
    first, second, third = asked(line, "ns", "ns", "ns")
    assert line.withdraw(second) is None and line.waiting() == 1  # out of the line: nothing to pass on
    assert line.withdraw(first) is third and third.actor is SLOT  # its slot, not taken, goes to the next
    assert line.withdraw(third) is None and line.starting == 0  # nobody left: the slot frees
    fourth, fifth = asked(line, "ns", "ns")
    line.returned("actor")  # an actor granted to fifth, which stops waiting before it takes it
    assert line.withdraw(fifth) is None and line.free == ["actor"]


def test_the_pools_refill_takes_a_slot_only_when_no_run_waits():
    line = ActorLine(limit=2)
    assert line.try_slot() and line.starting == 1
    asked(line, "ns")  # takes the second slot
    assert not line.try_slot()
    asked(line, "ns")  # waits
    line.started()
    assert not line.try_slot()  # the freed slot went to the waiting run
