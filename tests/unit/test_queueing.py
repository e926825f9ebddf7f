"""Who runs next: limits, priority, fairness across namespaces, FIFO within one."""
from kubechain.queueing import Limits, Queued, plan


def runs(namespace, count, priority=0, start=0):
    return [Queued(namespace, f"{namespace}-{i}", priority, f"2026-01-01T00:00:{start + i:02d}Z") for i in range(count)]


def admitted(slots):
    return [s.run.name for s in slots if s.admitted]


def test_fifo_within_a_namespace_and_positions():
    slots = plan(runs("a", 4), {}, Limits(total=10, per_namespace=2))
    assert admitted(slots) == ["a-0", "a-1"]
    assert [(s.run.name, s.position) for s in slots if not s.admitted] == [("a-2", 1), ("a-3", 2)]


def test_a_burst_in_one_namespace_does_not_starve_another():
    burst, small = runs("big", 50), runs("small", 2, start=30)  # the small namespace came later
    slots = plan(burst + small, {"big": 3}, Limits(total=6, per_namespace=100))
    assert admitted(slots) == ["small-0", "small-1", "big-0"]  # slots go to the namespace with fewer running
    assert [s.run.name for s in slots][:5] == ["small-0", "small-1", "big-0", "big-1", "big-2"]


def test_priority_first_then_fairness():
    slots = plan(runs("a", 2) + runs("b", 1, priority=5, start=50), {"b": 4}, Limits(total=5, per_namespace=10))
    assert admitted(slots) == ["b-0"]


def test_global_and_namespace_limits_and_overrides():
    limits = Limits(total=3, per_namespace=2, namespaces=(("vip", 5),))
    assert admitted(plan(runs("a", 3) + runs("vip", 3), {}, limits)) == ["a-0", "vip-0", "a-1"]
    assert admitted(plan(runs("vip", 5), {}, Limits(total=10, per_namespace=2, namespaces=(("vip", 4),)))) == [
        "vip-0", "vip-1", "vip-2", "vip-3"]
    assert admitted(plan(runs("a", 2), {"x": 3}, limits)) == []
