"""Context compaction: the model's view of a long conversation, what a compaction moves, and the loop doing it as a
checkpointed step of its own (truncate and summarize, at the threshold and on the provider's refusal)."""
import asyncio
import json

import pytest

from actors import compaction
from actors.compaction import MARKER, PINNED, plan, tokens, view
from actors.llm import LLMError, http_error
from actors.loop import AgentLoop
from actors.tools.executor import LocalToolExecutor
from kubechain.api.runspec import ResolvedTool
from kubechain.api.v1alpha1 import ContextPolicy, ContextState, LLMSpec, Phase, Reason, TaskRunStatus, ToolExecution
from kubechain.core.lifecycle import enter

from .test_loop import NOW, SPEC, MemoryStore, ScriptedLLM, assistant, call

NOTE = "x" * 2000  # a 2 KB note: ~500 tokens in the call's arguments, again in its result


def conversation(turns: int) -> list[dict]:
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "take notes"}]
    for i in range(turns):
        history.append({"role": "assistant", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "echo", "arguments": json.dumps({"t": NOTE})}}]})
        history.append({"role": "tool", "tool_call_id": f"c{i}", "content": NOTE})
    return history


def pairs_valid(messages: list[dict]) -> bool:
    """Every tool message answers a call of the assistant message before its run of tool messages."""
    open_ids: set[str] = set()
    for m in messages:
        if m["role"] == "assistant":
            open_ids = {c["id"] for c in m.get("tool_calls") or ()}
        elif m["role"] == "tool":
            if m["tool_call_id"] not in open_ids:
                return False
        else:
            open_ids = set()
    return True


def test_truncate_elides_old_results_naming_their_calls_keeps_the_newest_turns_and_pairs_valid():
    history = conversation(12)
    policy = ContextPolicy(strategy="truncate")
    before = sum(map(tokens, view(history, None)))
    assert before > 12_000
    done = plan(history, None, 6000, policy)
    seen = view(history, done.state)
    assert sum(map(tokens, seen)) == done.state.tokens <= 6000 * 0.8 / 2  # under half the threshold
    assert seen[:PINNED] == history[:PINNED] and seen[-2:] == history[-2:]  # pinned, and the latest turn as it is
    assert pairs_valid(seen)
    elided = [m for m in seen if m["role"] == "tool" and m["content"] != NOTE]
    assert elided and all(f"call {m['tool_call_id']} is kept in the run's journal" in m["content"] for m in elided)
    assert done.before == before and done.state.compactions == 1
    assert history == conversation(12)  # the conversation itself is never changed


def test_truncate_leaves_out_whole_oldest_turns_when_eliding_is_not_enough():
    history = conversation(200)
    done = plan(history, None, 6000, ContextPolicy(strategy="truncate"))
    assert done.state.omitted_through > PINNED
    assert history[done.state.omitted_through]["role"] == "assistant"  # at the start of a turn
    seen = view(history, done.state)
    assert "earlier messages were left out" in seen[PINNED]["content"] and pairs_valid(seen)
    assert done.state.tokens <= 2400


def test_compaction_only_moves_forward_and_says_when_nothing_more_can_go():
    history, policy = conversation(12), ContextPolicy(strategy="truncate")
    first = plan(history, None, 6000, policy).state
    assert plan(history, first, 6000, policy) is None  # nothing new since
    history += conversation(14)[-4:]
    second = plan(history, first, 6000, policy).state
    assert second.elided_through > first.elided_through and second.compactions == 2
    assert plan(conversation(1), None, 100, policy).state.elided_through == PINNED  # the latest turn stays


def test_markers_are_in_the_conversation_and_never_in_the_view():
    history = conversation(3) + [compaction.marker("context compacted")]
    assert MARKER not in json.dumps(view(history, None))
    assert MARKER not in json.dumps(view(history, ContextState(omitted_through=4, elided_through=6)))


def test_summarize_asks_for_the_old_part_and_the_view_carries_the_summary():
    history = conversation(12)
    done = plan(history, None, 6000, ContextPolicy(strategy="summarize"))
    start, end = done.to_summarize
    assert start == PINNED and end == done.state.omitted_through == done.state.elided_through
    request = compaction.summary_request(history, done.to_summarize, "earlier summary", budget_tokens=3000)
    assert request[0]["content"] == compaction.SUMMARIZE_PROMPT
    assert len(request[1]["content"]) < 3000 * 4 * 1.2 and request[1]["content"].startswith("Summary so far: ")
    seen = view(history, done.state.model_copy(update={"summary": "they took notes"}))
    assert seen[PINNED]["content"].endswith("they took notes") and seen[PINNED + 1:] == history[end:]
    assert pairs_valid(seen)


def test_the_provider_refusal_is_recognised_and_its_window_read():
    error = http_error(400, "This model's maximum context length is 6000 tokens. However, your messages resulted "
                       "in 7210 tokens.", {}, NOW, "context_length_exceeded")
    assert error.reason is Reason.CONTEXT_LENGTH_EXCEEDED and not error.retryable
    assert compaction.window_in(str(error)) == 6000
    assert http_error(400, "maximum context length is 4096", {}, NOW).reason is Reason.CONTEXT_LENGTH_EXCEEDED
    assert http_error(400, "bad", {}, NOW, "invalid_value").reason is Reason.LLM_REJECTED


ECHO = ResolvedTool(name="echo", description="echo", parameters={"type": "object"},
                    execution=ToolExecution.model_validate({"builtin": {"name": "echo"}}))


class SummarisingLLM(ScriptedLLM):
    """Answers a request for a summary with `summary`, the others from the script."""

    def __init__(self, summary, *replies):
        super().__init__(*replies)
        self.summary = summary

    async def complete(self, messages, tools):
        if messages[0]["content"] == compaction.SUMMARIZE_PROMPT:
            self.calls.append((list(messages), tools))
            return self.summary
        return await super().complete(messages, tools)


def long_run(strategy: str, window: int | None, *replies, turns: int = 12, summary=None):
    spec = SPEC.model_copy(update={"tools": [ECHO], "llm": LLMSpec(model="m", contextWindowTokens=window),
                                   "context": ContextPolicy(strategy=strategy), "max_turns": 100})
    note = [assistant(calls=[call(f"c{i}", "echo", json.dumps({"text": NOTE}))], tokens=(0, 0)) for i in range(turns)]
    llm, store = SummarisingLLM(summary, *note, *replies), MemoryStore()
    status = enter(TaskRunStatus(), Phase.RUNNING, "ActorScheduled", now=NOW)
    final = asyncio.run(AgentLoop(spec, llm, LocalToolExecutor(spec.tools), store).run(status))
    return final, llm, store


def sent(llm) -> list[int]:
    return [sum(map(tokens, messages)) for messages, _ in llm.calls]


def test_a_long_run_is_truncated_before_it_passes_the_threshold_in_a_checkpointed_step():
    final, llm, store = long_run("truncate", 6000, assistant("done"))
    assert final.phase is Phase.COMPLETED and final.context.compactions >= 2
    assert max(sent(llm)) < 6000 * 0.8 + 1200  # never far past the threshold (one step's growth at most)
    markers = [m for m in final.context_window if m.name == MARKER]
    assert len(markers) == final.context.compactions and markers[0].content.startswith("context compacted (truncate")
    assert len([m for m in final.context_window if m.role == "tool"]) == 12  # the conversation keeps every result
    assert [r for r, _ in store.events].count(Reason.CONTEXT_COMPACTED) == final.context.compactions
    compacted = next(s for s in store.saved if s.context is not None)  # its own checkpoint, before the next request
    assert compacted.context_window[-1].name == MARKER and compacted.step < final.step


def test_summarize_counts_the_summary_request_in_usage_and_restores_the_same_view():
    spec_llm = ScriptedLLM()
    final, llm, store = long_run("summarize", 6000, assistant("done"), turns=12,
                                 summary=assistant("SUMMARY of the notes", tokens=(700, 40)))
    asks = [messages for messages, tools in llm.calls if messages[0]["content"] == compaction.SUMMARIZE_PROMPT]
    assert final.phase is Phase.COMPLETED and len(asks) == final.context.compactions >= 1
    assert all(tools == [] for messages, tools in llm.calls if messages[0]["content"] == compaction.SUMMARIZE_PROMPT)
    assert final.usage.prompt_tokens >= 700 * len(asks) and final.context.summary == "SUMMARY of the notes"
    last_request = llm.calls[-1][0]
    assert any("SUMMARY of the notes" in (m.get("content") or "") for m in last_request)
    # A restored run (a new actor) sends exactly what the old one would have: the view is a function of status.
    restored = AgentLoop(SPEC, spec_llm, LocalToolExecutor([]), store)
    restored._history = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in final.context_window]
    assert view(restored._history, final.context)[:-1] == last_request


@pytest.mark.parametrize("strategy, phase", [("truncate", Phase.COMPLETED), ("none", Phase.FAILED)])
def test_the_providers_refusal_compacts_without_a_declared_window_or_fails_with_none(strategy, phase):
    refusal = LLMError("BadRequestError: This model's maximum context length is 6000 tokens.",
                       reason=Reason.CONTEXT_LENGTH_EXCEEDED)
    final, llm, _ = long_run(strategy, None, refusal, assistant("done"), turns=8)
    assert final.phase is phase
    if phase is Phase.FAILED:
        assert final.phase_history[-1].reason == Reason.CONTEXT_LENGTH_EXCEEDED
        assert "Agent.spec.context.strategy is none" in final.error
    else:
        assert final.context.compactions == 1 and sent(llm)[-1] < sent(llm)[-2]


def test_a_refusal_nothing_can_fix_fails_the_run_instead_of_looping():
    refusal = LLMError("maximum context length is 10 tokens", reason=Reason.CONTEXT_LENGTH_EXCEEDED)
    final, llm, _ = long_run("truncate", None, *[refusal] * 20, turns=3)
    assert final.phase is Phase.FAILED and "nothing more could be compacted" in final.error
    assert len(llm.calls) < 3 + 20


def test_the_scripted_server_answers_the_runs_summary_requests_as_a_model_would():
    from kubechain.demo.rules import summary_step

    request = compaction.summary_request(conversation(2), (PINNED, 6), None, budget_tokens=1000)
    assert summary_step(request)["content"].startswith("Summary of 4 entries: assistant: ")
    assert summary_step(conversation(2)) is None
