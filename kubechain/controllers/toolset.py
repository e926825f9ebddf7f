"""ToolSet: ready when every inline tool validates and every referenced Tool is ready; Agents follow."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.observability.handlers import observed
from kubechain.api.v1alpha1 import GROUP, VERSION

from .catalog import IndexCatalog
from .readiness import reconcile_readiness, reevaluate_dependents


@kopf.on.event(GROUP, VERSION, "toolsets")  # every event: see tool.py
@observed("ToolSet")
async def reconcile(type: str, namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status,
                    meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any) -> None:
    catalog = IndexCatalog(kwargs)
    if type != "DELETED":
        await reconcile_readiness(memo.kube, catalog, "ToolSet", namespace, name, uid,
                                  meta.get("generation"), dict(spec), dict(status))
    await reevaluate_dependents(memo.kube, catalog, "Agent", namespace,
                                depends_on=lambda ag: any(r.get("name") == name for r in ag.get("toolsetRefs", [])))
