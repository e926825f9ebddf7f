"""Tool: ready when its definition can be offered to an LLM; ToolSets that reference it follow."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.operator.observed import observed
from kubechain.api.v1alpha1 import GROUP, VERSION

from .catalog import IndexCatalog
from .readiness import reconcile_readiness, reevaluate_dependents


# Readiness is a pure function of in-memory indexes, so every watch event (our own status writes
# included) re-evaluates it: concurrent evaluations converge instead of leaving a stale verdict.
@kopf.on.event(GROUP, VERSION, "tools")
@observed("Tool")
async def reconcile(type: str, namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status,
                    meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any) -> None:
    catalog = IndexCatalog(kwargs)
    if type != "DELETED":
        await reconcile_readiness(memo.state.kube, catalog, "Tool", namespace, name, uid,
                                  meta.get("generation"), dict(spec), dict(status))
    await reevaluate_dependents(memo.state.kube, catalog, "ToolSet", namespace,
                                depends_on=lambda ts: any(r.get("name") == name for r in ts.get("toolRefs", [])))
