"""Writing `ready`/`message`/`conditions` (+ Events on change) for LLM, Tool, ToolSet and Agent."""
from __future__ import annotations

from typing import Any, Callable

import kopf

from kubechain.api.v1alpha1 import KIND_BY_NAME, Condition, ConditionType
from kubechain.api.v1alpha1.common import with_condition, without_empty_strings
from kubechain.operator.kube import Kube
from kubechain.core.resolve import Catalog, Readiness, evaluate

from .catalog import ref_body


async def write_readiness(kube: Kube, kind: str, namespace: str, name: str, uid: str, generation: int | None,
                          status: dict[str, Any], readiness: Readiness, with_tools: bool = False) -> bool:
    """Patch the status when it differs from `status`; post an Event when readiness flips. True if written."""
    new: dict[str, Any] = {"ready": readiness.ready, "message": readiness.message, "observedGeneration": generation}
    if with_tools:
        new["tools"] = readiness.tools
    if all(status.get(k, "") == v for k, v in new.items()):
        return False
    previous = [Condition.model_validate(c) for c in status.get("conditions", [])]
    conditions = with_condition(previous, ConditionType.READY, readiness.ready, readiness.reason, readiness.message, generation)
    new["conditions"] = [c.to_wire() for c in conditions]
    await kube.patch_status(KIND_BY_NAME[kind].plural, namespace, name, without_empty_strings(new))
    changed = status.get("ready") != readiness.ready or status.get("message") != readiness.message
    if changed and not readiness.reason.transient:
        kopf.event(ref_body(kind, namespace, name, uid), type="Normal" if readiness.ready else "Warning",
                   reason=readiness.reason, message=readiness.message)
    return True


async def reconcile_readiness(kube: Kube, catalog: Catalog, kind: str, namespace: str, name: str, uid: str,
                              generation: int | None, spec: dict[str, Any], status: dict[str, Any]) -> bool:
    """Evaluate a Tool, ToolSet or Agent and write its status if it changed. True when it became ready."""
    # The index holds the newest status we know of (fresher than a queued event's body).
    known = (catalog.get(kind, namespace, name) or {}).get("status", status)
    readiness = evaluate(kind, namespace, spec, catalog, known)
    written = await write_readiness(kube, kind, namespace, name, uid, generation, known, readiness,
                                    with_tools=kind != "Tool")
    return written and readiness.ready and not known.get("ready")


async def reevaluate_dependents(kube: Kube, catalog: Catalog, kind: str, namespace: str,
                                depends_on: Callable[[dict[str, Any]], bool]) -> None:
    """Re-evaluate every `kind` object in `namespace` whose spec `depends_on` the object that changed."""
    for name in catalog.names(kind, namespace):
        obj = catalog.get(kind, namespace, name)
        if obj is None or not depends_on(obj["spec"]):
            continue
        await reconcile_readiness(kube, catalog, kind, namespace, name, obj["uid"], obj["generation"],
                                  obj["spec"], obj["status"])
