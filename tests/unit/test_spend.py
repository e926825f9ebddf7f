"""What runs spend: own usage and priced cost per answered request, a child tree's totals journaled on its call
once (so a restored run adds nothing twice), the budget checked before a request, children's equal shares."""
import pytest

from actors import spend
from kubechain.api.v1alpha1 import Budget, Pricing, TaskRunSpec, TaskRunStatus, ToolCallRecord, Usage
from kubechain.core.builders import child_budget

PRICE = Pricing(currency="EUR", inputPerMillionTokens=2, outputPerMillionTokens=8, cachedInputPerMillionTokens=0.5)


def usage(prompt: int, completion: int, cached: int = 0) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                 cached_prompt_tokens=cached)


def test_cached_prompt_tokens_are_priced_apart():
    assert PRICE.cost(usage(1000, 500, cached=400)) == pytest.approx((600 * 2 + 400 * 0.5 + 500 * 8) / 1e6)
    assert Pricing(inputPerMillionTokens=2, outputPerMillionTokens=8).cost(usage(1000, 0, 400)) == pytest.approx(0.002)


def test_own_requests_and_a_childs_tree_add_up_and_recomputing_adds_nothing_twice():
    status = TaskRunStatus()
    spend.charge(status, usage(100, 20), PRICE)
    call = ToolCallRecord(id="c", step=1, tool="research", arguments="{}")
    status.tool_call_history.append(call)
    spend.child_spent(status, call, usage(50, 10), 0.25, "EUR")
    assert status.usage.total_tokens == 120 and status.tree_usage.total_tokens == 180
    assert status.cost == pytest.approx(PRICE.cost(usage(100, 20))) and status.currency == "EUR"
    assert status.tree_cost == pytest.approx(status.cost + 0.25)
    before = status.model_copy(deep=True)
    spend.total(status)  # a restored run recomputes from the journal
    assert status == before
    other = ToolCallRecord(id="d", step=1, tool="research", arguments="{}")
    status.tool_call_history.append(other)
    spend.child_spent(status, other, usage(1, 1), 9.0, "USD")  # another currency: its tokens count, its cost not
    assert status.tree_usage.total_tokens == 182 and status.tree_cost == pytest.approx(before.tree_cost)


def test_without_pricing_tokens_count_and_cost_stays_unset():
    status = TaskRunStatus()
    spend.charge(status, usage(10, 5), None)
    assert status.tree_usage.total_tokens == 15 and status.cost is None and status.tree_cost is None


@pytest.mark.parametrize("budget,spent,next_prompt,stops", [
    (None, 10**9, 10**9, False),
    (Budget(maxTokens=1000), 900, 100, False),
    (Budget(maxTokens=1000), 900, 101, True),
    (Budget(maxCost=0.01), 0, 4000, False),  # 4000 prompt tokens at 2/M: 0.008
    (Budget(maxCost=0.01), 0, 6000, True),
])
def test_the_budget_is_checked_before_the_request_that_would_pass_it(budget, spent, next_prompt, stops):
    status = TaskRunStatus()
    spend.charge(status, usage(spent, 0), None)
    why = spend.over_budget(status, budget, next_prompt, PRICE)
    assert (why is not None) is stops
    if stops:
        assert "spec.budget.max" in why and "is spent" in why


def test_children_of_a_step_share_what_the_parent_has_left_equally():
    parent = TaskRunSpec.model_validate({"agentRef": {"name": "a"}, "userInput": "x",
                                         "budget": {"maxTokens": 1000, "maxCost": 1.0}})
    share = child_budget(parent, usage(300, 100), 0.4, children=2)
    assert share.max_tokens == 300 and share.max_cost == pytest.approx(0.3)
    spent = child_budget(parent, usage(990, 100), 2.0, children=3)
    assert spent.max_tokens == 1 and spent.max_cost > 0  # nothing left: the children stop at once
    assert child_budget(TaskRunSpec.model_validate({"agentRef": {"name": "a"}, "userInput": "x"}), usage(1, 1),
                        None, 1) is None
