"""Tool: ready when its definition can be offered to an LLM; ToolSets that reference it follow."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION

from .catalog import IndexCatalog
from .readiness import reconcile_readiness, reevaluate_dependents


@kopf.on.resume(GROUP, VERSION, "tools")
@kopf.on.create(GROUP, VERSION, "tools")
@kopf.on.update(GROUP, VERSION, "tools")
async def reconcile(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta,
                    memo: kopf.Memo, **kwargs: Any) -> None:
    await reconcile_readiness(memo.kube, IndexCatalog(kwargs), "Tool", namespace, name, uid,
                              meta.get("generation"), dict(spec), dict(status))


@kopf.on.event(GROUP, VERSION, "tools")
async def notify_toolsets(namespace: str, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    await reevaluate_dependents(memo.kube, IndexCatalog(kwargs), "ToolSet", namespace,
                                depends_on=lambda ts: any(r.get("name") == name for r in ts.get("toolRefs", [])))
