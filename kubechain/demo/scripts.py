"""The scripted server's scripts and its shared state (kubechain/demo/llm_server.py documents the step format).

A script is validated when it is set, so a typo breaks the test that set it rather than silently echoing.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import yaml

from .completions import Message, Step, conversation_key
from .models import ServedModels
from .rules import demo_step

DEMO_MODEL = "demo"
MAX_RECORDED_REQUESTS = 10_000
_STEP_KEYS = {"content", "tool_calls", "latency", "error", "finish_reason", "refuse", "ignore", "context_window",
              "stream_chunk", "stream_delay", "stream_break", "hold",
              "stream_hold"}


def validate_steps(steps: Any) -> list[Step]:
    """Fail loudly on malformed scripts: a typo should break the test, not silently echo."""
    if not isinstance(steps, list) or not steps:
        raise ValueError("a script must be a non-empty list of steps")
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ValueError(f"step {i} must be a mapping")
        if unknown := set(step) - _STEP_KEYS:
            raise ValueError(f"step {i} has unknown keys {sorted(unknown)}")
        if "content" not in step and "tool_calls" not in step:
            raise ValueError(f"step {i} needs 'content' or 'tool_calls'")
        if any(not isinstance(c, dict) or "name" not in c for c in step.get("tool_calls") or []):
            raise ValueError(f"step {i}: every tool call needs a 'name'")
        error = step.get("error")
        if error is not None and not (isinstance(error, dict) and "status" in error):
            raise ValueError(f"step {i}: 'error' needs a 'status'")
        if "hold" in step and not (isinstance(step["hold"], str) and step["hold"]):
            raise ValueError(f"step {i}: 'hold' names the gate the reply waits for")
        held = step.get("stream_hold")
        if held is not None and not (isinstance(held, dict) and isinstance(held.get("after"), int)
                                     and isinstance(held.get("gate"), str)):
            raise ValueError(f"step {i}: 'stream_hold' needs 'after' (chunks sent first) and 'gate'")
        broken = step.get("stream_break")
        if broken is not None and not (isinstance(broken, dict) and isinstance(broken.get("after"), int)):
            raise ValueError(f"step {i}: 'stream_break' needs 'after' (chunks sent before the connection drops)")
    return steps


def load_script(path: str | Path) -> list[Step]:
    return validate_steps(yaml.safe_load(Path(path).read_text()))  # YAML also parses JSON



class ScriptState:
    """Scripts, injected-error budgets and the request log; shared by the loop and test threads."""

    def __init__(self, scripts: dict[str, list[Step]] | None = None, api_key: str | None = None,
                 lists_models: bool = True, streams: bool = True):
        self.api_key = api_key
        self.streams = streams  # False: `stream: true` is refused (400), as by servers that cannot stream
        self.served = ServedModels(lists_models)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Step]] = {}
        self._errors_served: dict[tuple[str, str, int, str], int] = {}
        self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.outage: tuple[float, dict[str, Any]] | None = None  # (until, error): PUT /_outage
        self.open_gates: set[str] = set()  # the "hold" gates opened (PUT /_gates/{name}): replies held no more
        for model, steps in (scripts or {}).items():
            self.set_script(model, steps)

    def set_script(self, model: str, steps: list[Step]) -> None:
        steps = list(validate_steps(steps))
        with self._lock:
            self._scripts[model] = steps
            self._forget_errors(model)  # a new script gets a fresh error budget

    def delete_script(self, model: str) -> bool:
        with self._lock:
            self._forget_errors(model)
            return self._scripts.pop(model, None) is not None

    def _forget_errors(self, model: str) -> None:
        for key in [k for k in self._errors_served if k[0] == model]:
            del self._errors_served[key]

    def models(self) -> list[str]:
        with self._lock:
            return sorted(set(self._scripts) | {DEMO_MODEL})

    def step_for(self, model: str, messages: list[Message], tools: list[str], index: int) -> Step:
        with self._lock:
            script = self._scripts.get(model)
        if not script:
            return demo_step(messages, tools)
        return script[min(index, len(script) - 1)]

    def take_error(self, model: str, messages: list[Message], index: int, step: Step,
                   field: str = "error") -> dict | None:
        """Return the step's error (or `stream_break`) if this conversation has not yet used up its budget."""
        error = step.get(field)
        if not error:
            return None
        key = (model, conversation_key(model, messages), index, field)
        with self._lock:
            served = self._errors_served.get(key, 0)
            if served >= int(error.get("times", 1)):
                return None
            self._errors_served[key] = served + 1
        return error

    def set_outage(self, error: dict[str, Any] | None) -> float | None:
        """Every chat request fails with `error` for error["seconds"] from now (None: ends it); returns its end."""
        if error is not None and not (isinstance(error, dict) and {"status", "seconds"} <= set(error)):
            raise ValueError("an outage needs a 'status' and 'seconds'")
        self.outage = (time.time() + float(error["seconds"]), error) if error else None  # one atomic swap
        return self.outage[0] if self.outage else None

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._requests.append(entry)
        return entry

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()


