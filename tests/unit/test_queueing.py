"""Who runs next: limits, priority, fairness across namespaces, FIFO within one."""
from kubechain.core.queueing import Limits, Queued, plan, why_queued


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


def test_an_llm_limit_holds_back_only_the_runs_of_that_llm():
    on_gpt = [Queued("a", f"gpt-{i}", 0, f"2026-01-01T00:00:0{i}Z", llm="gpt") for i in range(3)]
    other = [Queued("a", "local-0", 0, "2026-01-01T00:00:09Z", llm="local")]
    limits = Limits(total=10, per_namespace=10, llms=((("a", "gpt"), 2),))
    assert admitted(plan(on_gpt + other, {}, limits)) == ["gpt-0", "gpt-1", "local-0"]  # no head-of-line blocking
    assert admitted(plan(on_gpt + other, {"a": 1}, limits, {("a", "gpt"): 1})) == ["gpt-0", "local-0"]
    elsewhere = Queued("b", "gpt-b", 0, "2026-01-01T00:00:00Z", llm="gpt")  # an LLM of the same name, namespace b
    assert admitted(plan([elsewhere], {"a": 2}, limits, {("a", "gpt"): 2})) == ["gpt-b"]
    assert why_queued("a", {"a": 2}, limits, "gpt", {("a", "gpt"): 2}) == (
        "LLM gpt limit: 2 of 2 running (maxConcurrentRuns)")
    assert why_queued("a", {"a": 2}, limits, "local", {("a", "gpt"): 2}) == "cluster limit: 2 of 10 running"


def operator_state(total: int, per_namespace: int):
    """The operator's state with these limits (no Kubernetes or Ray client: admission uses neither)."""
    from kubechain.operator.settings import ReconcileSettings, Settings
    from kubechain.operator.state import OperatorState

    settings = Settings(reconcile=ReconcileSettings(max_running=total, max_running_per_namespace=per_namespace))
    return OperatorState(settings=settings, kube=None, ray=None)


def indexes(queued: list[Queued], running: dict[str, list[str]]) -> dict:
    """kopf's indexes as admit() reads them (kopf gives each value as a collection)."""
    agents = {(ns, "a"): [{"spec": {}, "status": {"ready": True}}] for ns in {q.namespace for q in queued}}
    return {"queued_taskruns": {"queue": [(f"uid-{q.name}", "Agent", "a", q) for q in queued]},
            "running_taskruns": running, "namespace_limits": {}, "namespace_priorities": {},
            **{f"{plural}_index": {} for plural in ("llms", "tools", "toolsets", "tasks")}, "agents_index": agents}


def test_admit_says_go_only_from_a_fresh_plan_and_places_a_run_too_new_for_a_recent_one():
    from kubechain.core.observation import Admitted, InQueue
    from kubechain.operator.controllers.taskrun.queue import admit

    memo, queued = operator_state(total=10, per_namespace=2), runs("a", 3)
    assert admit(memo, indexes(queued, {}), "a", "a-0", "uid-a-0") == Admitted()  # counted as running now
    assert memo.scheduled == {"uid-a-0": queued[0]}
    assert admit(memo, indexes(queued, {}), "a", "a-2", "uid-a-2") == InQueue(
        "Queued: position 1 of 1 (namespace limit: 2 of 2 running)", 1)  # a-0 scheduled, a-1 admitted ahead of it
    later = queued + [Queued("a", "a-new", 0, "2026-01-01T00:00:09Z")]  # created since the recent plan, which
    assert admit(memo, indexes(later, {}), "a", "a-new", "uid-a-new").position == 2  # no room left in "a": last
    memo.last_plan["at"] = 0.0  # an old plan is never used
    assert admit(memo, indexes(queued[1:], {"a": [("uid-a-0", "a")]}), "a", "a-1", "uid-a-1") == Admitted()


def test_admit_holds_runs_at_their_llms_max_concurrent_runs_and_says_so():
    from kubechain.core.observation import Admitted, InQueue
    from kubechain.operator.controllers.taskrun.queue import admit

    memo, queued = operator_state(total=10, per_namespace=10), runs("a", 3)
    index = indexes(queued, {"a": [("uid-old", "a")]})  # one run of agent a already Running
    index["agents_index"][("a", "a")] = [{"spec": {"llmRef": {"name": "gpt"}}, "status": {"ready": True}}]
    index["llms_index"] = {("a", "gpt"): [{"spec": {"maxConcurrentRuns": 2}, "status": {}}]}
    assert admit(memo, index, "a", "a-0", "uid-a-0") == Admitted()
    assert memo.scheduled["uid-a-0"].llm == "gpt"  # counted against its LLM until seen Running
    memo.last_plan.clear()
    assert admit(memo, index, "a", "a-1", "uid-a-1") == InQueue(
        "Queued: position 1 of 2 (LLM gpt limit: 2 of 2 running (maxConcurrentRuns))", 1)


def test_the_queue_never_ranks_a_run_above_its_namespaces_highest_priority():
    """Without webhooks nothing refuses a priority: the plan clamps it to the namespace's maximum."""
    from kubechain.core.observation import Admitted, InQueue
    from kubechain.operator.controllers.taskrun.queue import admit

    queued = runs("a", 1) + [Queued("b", "b-0", 10, "2026-01-01T00:00:09Z")]
    index = indexes(queued, {})
    memo = operator_state(total=1, per_namespace=10)
    assert admit(memo, index, "a", "a-0", "uid-a-0") == Admitted()  # b-0's priority 10 counts as 0: a-0 came first
    memo, index["namespace_priorities"] = operator_state(total=1, per_namespace=10), {"b": ["10"]}
    assert admit(memo, index, "a", "a-0", "uid-a-0") == InQueue(
        "Queued: position 1 of 1 (cluster limit: 1 of 1 running)", 1)


def test_a_deep_queue_shows_rounded_places_so_its_runs_are_not_rewritten_at_every_admission():
    from kubechain.core.queueing import said, shown

    assert [shown(n) for n in (1, 20, 21, 99, 437, 1234)] == [1, 20, 21, 99, 430, 1200]
    assert [said(n) for n in (7, 437)] == ["7", "~430"]
    # 700 runs queued behind a full namespace: as 50 are admitted one by one, a run near the end changes its shown
    # place a few times, not 50.
    assert len({shown(position) for position in range(700, 650, -1)}) == 6
