"""What a run spends, and whether its budget lets it ask again: pure bookkeeping on the status (no I/O).

A run's own usage and cost grow with each answered LLM request, in the step that asked it, so a request whose step
was never checkpointed (the actor died) is not counted twice when the step is asked again. A delegated run's tree
totals come back with its result (CallInput) and are journaled on the delegate call, once; the tree totals are
the run's own plus those, recomputed from the journal, so a restored run adds nothing twice.
"""
from __future__ import annotations

from kubechain.api.v1alpha1 import Budget, Pricing, TaskRunStatus, ToolCallRecord, Usage


def charge(status: TaskRunStatus, usage: Usage, pricing: Pricing | None) -> None:
    """An answered request of the run's own."""
    status.usage = status.usage + usage
    if pricing is not None:
        status.cost = (status.cost or 0.0) + pricing.cost(usage)
        status.currency = pricing.currency
    total(status)


def child_spent(status: TaskRunStatus, record: ToolCallRecord, usage: Usage | None, cost: float | None,
                currency: str | None) -> None:
    """A delegate call's child tree ended: what it spent goes on the call (its cost only in the parent's currency,
    or when the parent has none yet)."""
    record.child_usage = usage
    record.child_cost = cost if cost is not None and currency in (None, status.currency) else None
    if status.currency is None and record.child_cost is not None:
        status.currency = currency
    total(status)


def total(status: TaskRunStatus) -> None:
    children = [r for r in status.tool_call_history if r.child_usage is not None or r.child_cost is not None]
    status.tree_usage = sum((r.child_usage for r in children if r.child_usage), status.usage)
    costs = [c for c in [status.cost, *(r.child_cost for r in children)] if c is not None]
    status.tree_cost = sum(costs) if costs else None


def over_budget(status: TaskRunStatus, budget: Budget | None, next_prompt_tokens: int,
                pricing: Pricing | None) -> str | None:
    """Why the next request may not be made: it would take the tree past its budget (its prompt, estimated; the
    answer's tokens are known only once it is made). None: it may."""
    if budget is None:
        return None
    spent = status.tree_usage.total_tokens
    if budget.max_tokens is not None and spent + next_prompt_tokens > budget.max_tokens:
        return (f"the budget of {budget.max_tokens} tokens is spent: {spent} used by this run and its delegated "
                f"runs, and the next request would send about {next_prompt_tokens} more (spec.budget.maxTokens)")
    cost = status.tree_cost or 0.0
    next_cost = pricing.cost(Usage(prompt_tokens=next_prompt_tokens)) if pricing is not None else 0.0
    if budget.max_cost is not None and cost + next_cost > budget.max_cost:
        currency = f" {status.currency or pricing.currency}" if (status.currency or pricing) else ""
        return (f"the budget of {budget.max_cost:g}{currency} is spent: {cost:.6g} by this run and its delegated "
                f"runs, and the next request would cost about {next_cost:.6g} more (spec.budget.maxCost)")
    return None
