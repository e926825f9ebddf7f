"""The TaskRun `kubechain fork` creates: the same `spec.forkOf` a `kubectl create` would carry."""
from __future__ import annotations

import uuid
from typing import Any

from kubechain.api.v1alpha1 import API_VERSION, ForkOf, RunLimits
from kubechain.core.fork import label_value
from kubechain.core.naming import LABEL_AGENT, LABEL_FORKED_FROM

# The source's limits the fork keeps (maxTurns counts the source's steps too: the fork starts at step N).
LIMITS = tuple(info.alias or name for name, info in RunLimits.model_fields.items())


def fork_body(source: dict[str, Any], step: int, answer: str | None = None, name: str | None = None) -> dict[str, Any]:
    """A fork of the TaskRun object `source` at `step`, with its limits; the operator checks the rest."""
    source_name = source["metadata"]["name"]
    fork_of = ForkOf(name=source_name, step=step, input=answer)
    limits = {k: v for k, v in (source.get("spec") or {}).items() if k in LIMITS}
    return {"apiVersion": API_VERSION, "kind": "TaskRun",
            "metadata": {"name": name or f"{source_name[:230]}-fork-{uuid.uuid4().hex[:6]}",
                         "labels": {LABEL_FORKED_FROM: label_value(source_name),
                                    LABEL_AGENT: (source.get("status") or {}).get("agent", "")}},
            "spec": {**limits, "forkOf": fork_of.to_wire()}}
