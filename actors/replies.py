"""What the actor refuses in an LLM reply before anything of it is journaled.

A reply whose tool calls share an id is refused as an LLM error (the run fails, reason LLMError, saying which id):
each tool result goes back to the model under its call's id, so with two calls of one id neither the model nor the
journal could tell which result answers which call. Giving the duplicates a tool error instead would still send
the model two results under one id. Ids that repeat *across* steps are fine: the run keys everything by
`<uid>/<step>/<call id>` (ToolCallRecord.key).
"""
from __future__ import annotations

from collections import Counter

from kubechain.api.v1alpha1 import Message


def refused(message: Message) -> str | None:
    """Why the reply cannot be journaled, or None."""
    counts = Counter(c.id for c in message.tool_calls or ())
    if repeated := sorted(i for i, n in counts.items() if n > 1):
        shown = ", ".join(f"{i!r} ({counts[i]} times)" for i in repeated[:5])
        return (f"the LLM's reply was refused: tool call ids must be unique within a reply, and {shown} "
                "repeat; the results could not be told apart")
    return None
