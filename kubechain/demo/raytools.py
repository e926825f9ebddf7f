"""Callables for `Tool.execution.ray` in tests, the demo and benchmarks: they run as Ray tasks on the workers."""
from __future__ import annotations

import os
import time
from typing import Any


def describe_task(sleep: float = 0.0, text: str = "") -> dict[str, Any]:
    """What Ray gave this task (its resources, runtime_env variable KUBECHAIN_TOOL_GREETING), and when it ran."""
    import ray

    started = time.time()
    time.sleep(sleep)
    return {"resources": ray.get_runtime_context().get_assigned_resources(), "text": text.upper(),
            "greeting": os.environ.get("KUBECHAIN_TOOL_GREETING", ""), "started": started, "ended": time.time()}


def fail(message: str = "boom") -> str:
    raise ValueError(message)
