"""Agent: ready when its LLM and every ToolSet are ready. LLM and ToolSet changes re-evaluate it too
(see notify_agents in llm.py and toolset.py), so readiness follows dependencies both ways."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION

from .catalog import IndexCatalog
from .readiness import reconcile_readiness


@kopf.on.resume(GROUP, VERSION, "agents")
@kopf.on.create(GROUP, VERSION, "agents")
@kopf.on.update(GROUP, VERSION, "agents")
async def reconcile(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta,
                    memo: kopf.Memo, **kwargs: Any) -> None:
    await reconcile_readiness(memo.kube, IndexCatalog(kwargs), "Agent", namespace, name, uid,
                              meta.get("generation"), dict(spec), dict(status))
