"""Agent: ready when its LLM and every ToolSet are ready and every delegate tool's Agent exists. LLM and ToolSet
events re-evaluate it too (see llm.py and toolset.py), and so do the events of the Agents it delegates to (created,
deleted), so readiness follows its dependencies both ways. An Agent turning ready wakes the TaskRuns that wait for
it (an annotation write is a watch event for them)."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.operator.observed import observed
from kubechain.api.v1alpha1 import GROUP, VERSION, AgentSpec
from kubechain.core.resolve import delegate_targets, parse

from .catalog import IndexCatalog
from .readiness import reconcile_readiness, reevaluate_dependents


@kopf.on.event(GROUP, VERSION, "agents")  # every event: see tool.py
@observed("Agent")
async def reconcile(type: str, namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status,
                    meta: kopf.Meta, memo: kopf.Memo, pending_taskruns: kopf.Index, **kwargs: Any) -> None:
    catalog = IndexCatalog(kwargs)

    def delegates_here(raw: dict[str, Any]) -> bool:
        other, _ = parse(AgentSpec, raw)
        return other is not None and any(target == name for _, target in delegate_targets(namespace, other, catalog))

    if type != "MODIFIED":  # it appeared (they may be ready now) or went (they are not): the Agents delegating to it
        await reevaluate_dependents(memo.state.kube, catalog, "Agent", namespace, depends_on=delegates_here)
    if type == "DELETED":
        return
    await reconcile_readiness(memo.state.kube, catalog, "Agent", namespace, name, uid, meta.get("generation"),
                              dict(spec), dict(status))
    # Whoever made the agent ready (this event, an LLM or a ToolSet), its waiting runs start now.
    if ((catalog.get("Agent", namespace, name) or {}).get("status") or {}).get("ready"):
        for run in list(pending_taskruns.get((namespace, name), [])):  # a copy: the index changes across awaits
            await memo.state.kube.wake("taskruns", namespace, run, reason=f"agent {name} ready")
