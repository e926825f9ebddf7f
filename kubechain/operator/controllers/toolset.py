"""ToolSet: ready when every inline tool validates, every referenced Tool is ready and every MCP server's
tools were discovered (mcp_discovery.py); Agents follow."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.operator.observed import observed
from kubechain.api.v1alpha1 import GROUP, VERSION

from . import mcp_discovery
from .catalog import IndexCatalog
from .readiness import reconcile_readiness, reevaluate_dependents


@kopf.on.event(GROUP, VERSION, "toolsets")  # every event: see tool.py
@observed("ToolSet")
async def reconcile(type: str, namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status,
                    meta: kopf.Meta, memo: kopf.Memo, **kwargs: Any) -> None:
    catalog = IndexCatalog(kwargs)
    if type == "DELETED":
        mcp_discovery.forget(namespace, name)
    else:
        # A new or changed MCP server is discovered at once; its status write is the next event here.
        mcp_discovery.request(memo.state, namespace, name, dict(spec), dict(status))
        await reconcile_readiness(memo.state.kube, catalog, "ToolSet", namespace, name, uid,
                                  meta.get("generation"), dict(spec), dict(status))
    await reevaluate_dependents(memo.state.kube, catalog, "Agent", namespace,
                                depends_on=lambda ag: any(r.get("name") == name for r in ag.get("toolsetRefs", [])))
