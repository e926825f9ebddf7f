"""Context compaction: what the model is sent of a conversation that outgrows its window (Agent.spec.context).

Pure functions over the conversation in wire form. The conversation itself (status.contextWindow with the sealed
chunks in front) is append-only and keeps everything; what the model sees is its *view*, a function of the
conversation and `ContextState`:

    [system prompt, user input]                pinned: always sent as they are
    [summary, or a note]                       for messages [2, omittedThrough): not sent
    messages [omittedThrough, elidedThrough)   sent with tool results and long arguments replaced by markers
    messages [elidedThrough, ...)              sent as they are

A compaction moves the two indexes forward (never back) to the start of a turn, so an assistant message and the
tool results answering its calls are always sent together or not at all (the API refuses a tool message without
its call), and the latest turn is always in the view. Each compaction appends a system message named MARKER to
the conversation: `kubechain transcript` shows where it happened; views never include it.

Token counts: the provider's reported usage for the last request plus an estimate (characters / 4) for what was
appended since; no tokenizer is downloaded at run time.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kubechain.api.context import COMPACTION_MARKER as MARKER
from kubechain.api.v1alpha1 import ContextPolicy, ContextState

PINNED = 2  # the system prompt and the user's input
KEEP_RECENT = 0.25  # of the window: the newest turns kept as they are
LONG_ARGUMENTS = 256  # characters of a call's arguments kept in an elided turn
LONG_TEXT = 1024  # characters of a message's text kept in an elided turn
SUMMARY_CHARS = 8 * 1024  # of the LLM's summary, kept in status
SUMMARIZE_PROMPT = ("Summarise the conversation below for the assistant that is having it, so that it can go on "
                    "without it: the user's goal, what was done, the facts and results found, decisions, and what is "
                    "left to do. Keep names, numbers and identifiers exactly. Answer with the summary only.")
WINDOW_IN_ERROR = re.compile(r"maximum context length is (\d+)")

Wire = dict[str, Any]


def tokens(message: Wire) -> int:
    """An estimate of a message's tokens: ~4 characters per token, plus the message's own overhead."""
    chars = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        chars += len(call["function"]["name"]) + len(call["function"].get("arguments") or "")
    return chars // 4 + 4


def window_in(error: str) -> int | None:
    """The window a provider's context_length_exceeded error states (OpenAI's wording), if it does."""
    found = WINDOW_IN_ERROR.search(error)
    return int(found.group(1)) if found else None


def is_marker(message: Wire) -> bool:
    return message.get("role") == "system" and message.get("name") == MARKER


def marker(text: str) -> Wire:
    return {"role": "system", "name": MARKER, "content": text}


def view(history: list[Wire], state: ContextState | None) -> list[Wire]:
    """What the model is sent of `history` (the whole conversation, in wire form)."""
    if state is None:
        return [m for m in history if not is_marker(m)]
    out = history[:PINNED]
    if state.summary:
        out.append({"role": "user", "content": f"[Summary of the earlier conversation, made to fit the context "
                                               f"window; the run's journal keeps all of it]\n{state.summary}"})
    elif state.omitted_through > PINNED:
        out.append({"role": "user", "content": f"[{state.omitted_through - PINNED} earlier messages were left out "
                                               f"to fit the context window; the run's journal keeps them]"})
    out += [elided(m) for m in history[max(PINNED, state.omitted_through):state.elided_through] if not is_marker(m)]
    out += [m for m in history[max(PINNED, state.elided_through):] if not is_marker(m)]
    return out


def elided(message: Wire) -> Wire:
    """A message of an elided turn: results and long arguments replaced by markers naming the journal call."""
    if message.get("role") == "tool":
        return {**message, "content": f"[elided to fit the context window: the result of call "
                                      f"{message.get('tool_call_id')} is kept in the run's journal]"}
    out = dict(message)
    if len(text := message.get("content") or "") > LONG_TEXT:
        out["content"] = f"{text[:LONG_TEXT]} [… {len(text) - LONG_TEXT} characters elided]"
    if message.get("tool_calls"):
        out["tool_calls"] = [call if len(call["function"].get("arguments") or "") <= LONG_ARGUMENTS else
                             {**call, "function": {**call["function"], "arguments": json.dumps(
                                 {"elided": f"{len(call['function']['arguments'])} characters, kept in the run's "
                                            f"journal (call {call['id']})"})}}
                             for call in message["tool_calls"]]
    return out


def turn_starts(history: list[Wire]) -> list[int]:
    """Where turns begin after the pinned messages: a user or assistant message (tool results belong to the
    assistant message before them)."""
    return [i for i in range(PINNED, len(history)) if history[i].get("role") in ("user", "assistant")]


@dataclass(frozen=True)
class Compaction:
    """A compaction to apply: the new state, and what it covers (`summarize`: the messages to summarise)."""
    state: ContextState
    before: int  # estimated tokens of the view before
    to_summarize: tuple[int, int] | None = None  # [start, end) of the history, strategy summarize


def over(estimate: int, window: int | None, policy: ContextPolicy) -> bool:
    """Whether the next request should be compacted first."""
    return (window is not None and policy.strategy != "none"
            and estimate > window * policy.threshold_percent / 100)


def plan(history: list[Wire], state: ContextState | None, window: int, policy: ContextPolicy,
         overhead: int = 0) -> Compaction | None:
    """How to bring the view under half the threshold of `window` (tokens; `overhead`: the tools' schemas), moving
    forward from `state`; None when nothing more can be compacted."""
    state = state or ContextState()
    before = sum(map(tokens, view(history, state))) + overhead
    target = window * policy.threshold_percent / 200
    starts = turn_starts(history)
    last = starts[-1] if starts else len(history)
    # The newest turns kept as they are: as many as fit in KEEP_RECENT of the window (never the last one alone).
    keep_from, kept = last, sum(tokens(m) for m in history[last:])
    for start, end in zip(reversed(starts[:-1]), reversed(starts[1:])):
        size = sum(tokens(m) for m in history[start:end])
        if kept + size > window * KEEP_RECENT:
            break
        keep_from, kept = start, kept + size
    elide_to = max(keep_from, state.elided_through)
    if policy.strategy == "summarize":
        begin = max(PINNED, state.omitted_through)
        if elide_to <= begin:
            return None
        new = ContextState(compactions=state.compactions + 1, omitted_through=elide_to, elided_through=elide_to,
                           summary=state.summary)
        return Compaction(new, before, (begin, elide_to))
    # truncate: elide up to the kept turns; then leave out the oldest turns until the view fits
    omit_to = max(PINNED, state.omitted_through)
    new = ContextState(compactions=state.compactions + 1, omitted_through=omit_to, elided_through=elide_to,
                       summary=state.summary)  # an earlier summary still stands for what it covered
    size = sum(map(tokens, view(history, new))) + overhead
    for start in starts:
        if size <= target or start >= last:
            break
        if start <= omit_to:
            continue
        new = new.model_copy(update={"omitted_through": start, "elided_through": max(elide_to, start)})
        size = sum(map(tokens, view(history, new))) + overhead
    if (new.omitted_through, new.elided_through) == (state.omitted_through, state.elided_through):
        return None
    return Compaction(new.model_copy(update={"tokens": size}), before)


def summary_request(history: list[Wire], covered: tuple[int, int], previous: str | None,
                    budget_tokens: int) -> list[Wire]:
    """The request asking the LLM for a summary of history[covered] (after the previous summary, if any), cut to
    fit `budget_tokens`: each message's text shares the budget equally."""
    entries = [m for m in history[covered[0]:covered[1]] if not is_marker(m)]
    per_entry = max(200, budget_tokens * 4 // max(1, len(entries) + 1))
    lines = [f"Summary so far: {previous[:per_entry]}"] if previous else []
    for message in entries:
        text = message.get("content") or ""
        for call in message.get("tool_calls") or ():
            text += f" [calls {call['function']['name']}({call['function'].get('arguments') or ''})]"
        lines.append(f"{message.get('role')}: {text[:per_entry]}")
    return [{"role": "system", "content": SUMMARIZE_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def describe(compaction: Compaction, strategy: str, after: int) -> str:
    """What a compaction did, for the marker, the Event and status.message."""
    state = compaction.state
    if strategy == "summarize":
        what = f"messages up to #{state.omitted_through} summarised"
    else:
        what = f"messages up to #{state.elided_through} elided" + (
            f", up to #{state.omitted_through} left out" if state.omitted_through > PINNED else "")
    return (f"context compacted ({strategy}, #{state.compactions}): {what}; about {compaction.before} -> {after} "
            f"tokens; the journal keeps everything")
