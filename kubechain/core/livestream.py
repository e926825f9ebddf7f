"""The live stream of a run's open step, as clients see it (pure: the actor buffers it, actors/livestream.py; the
operator serves it, kubechain/operator/streams.py; the CLI and the console print it).

A *delta* is one piece of the model's answer as it streams, in a small JSON form:
- `{"c": "text"}`: content;
- `{"t": 0, "id": "call_1", "n": "calculator", "a": ""}`: tool call 0 opens (its id and name), then
  `{"t": 0, "a": "{\\"expr"}`: a fragment of its arguments;
- `{"u": {"prompt": 12, "completion": 40}}`: the usage, once at the end (when the server sends it).

A *cursor* `(step, source, attempt, offset)` says what a reader has: `source` is one actor's run of the step (a
replacement actor after a crash is another source), `attempt` counts the requests of the step in that source (a
stream that broke mid-way is asked again: a new attempt, from offset 0).

What a client prints of the open step is `preview(deltas)`, the same text `kubechain transcript` prints for the
message once checkpointed, cut where the stream has got to. The checkpointed transcript is the source of truth;
`advance` is how a printer that has already shown some text moves to a newer preview (or to the checkpointed
message) without showing anything twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Delta = dict[str, Any]


def call_text(name: str, arguments: str, call_id: str, closed: bool = True) -> str:
    """A tool call as the transcript prints it (kubechain/clients/transcript.py render_message)."""
    return f"→ {name}({arguments}) [{call_id}]" if closed else f"→ {name}({arguments}"


def preview(deltas: list[Delta]) -> str:
    """The text of the answer so far: its content, then its tool calls (the last one left open: more of its
    arguments may come)."""
    content: list[str] = []
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    for delta in deltas:
        if "c" in delta:
            content.append(delta["c"])
        elif "t" in delta:
            call = calls.setdefault(int(delta["t"]), ["", "", ""])
            call[0] = delta.get("id") or call[0]
            call[1] = delta.get("n") or call[1]
            call[2] += delta.get("a") or ""
    ordered = [calls[i] for i in sorted(calls)]
    text = "".join(content)
    for i, (call_id, name, arguments) in enumerate(ordered):
        text += call_text(name, arguments, call_id, closed=i < len(ordered) - 1)
    return text


@dataclass(frozen=True)
class Advance:
    """What to print to go from the text shown to `target`: `restart` when the shown text is not a prefix of the
    target (a broken stream's partial, replaced by another attempt's): the printer ends the line it shows, says so,
    and prints `text`, the whole target."""
    text: str
    restart: bool = False


def advance(shown: str, target: str) -> Advance:
    """Print only what is new. A target that the shown text already covers (a replacement actor's stream catching
    up with what its predecessor streamed) prints nothing."""
    if target.startswith(shown):
        return Advance(target[len(shown):])
    if shown.startswith(target):
        return Advance("")
    return Advance(target, restart=True)


@dataclass(frozen=True)
class Cursor:
    step: int = 0
    source: str = ""
    attempt: int = 0
    offset: int = 0

    def after(self, batch: dict[str, Any]) -> "Cursor":
        """The cursor past a batch the actor returned (`LiveStream.since`)."""
        return Cursor(batch["step"], batch["source"], batch["attempt"], batch["offset"] + len(batch["deltas"]))
