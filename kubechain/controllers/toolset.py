"""ToolSet: ready when every inline tool validates and every referenced Tool is ready; Agents follow."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION

from .catalog import IndexCatalog
from .readiness import reconcile_readiness, reevaluate_dependents


@kopf.on.resume(GROUP, VERSION, "toolsets")
@kopf.on.create(GROUP, VERSION, "toolsets")
@kopf.on.update(GROUP, VERSION, "toolsets")
async def reconcile(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta,
                    memo: kopf.Memo, **kwargs: Any) -> None:
    await reconcile_readiness(memo.kube, IndexCatalog(kwargs), "ToolSet", namespace, name, uid,
                              meta.get("generation"), dict(spec), dict(status))


@kopf.on.event(GROUP, VERSION, "toolsets")
async def notify_agents(namespace: str, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    await reevaluate_dependents(memo.kube, IndexCatalog(kwargs), "Agent", namespace,
                                depends_on=lambda ag: any(r.get("name") == name for r in ag.get("toolsetRefs", [])))
