"""kopf indexes of the kinds that reference each other, and a Catalog over them.

kopf keeps the indexes current from its watch streams, so readiness and resolution read memory,
not the apiserver, and every change event can re-evaluate the objects that depend on it.
"""
from __future__ import annotations

from typing import Any, Iterable

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION

INDEXED = {"LLM": "llms", "Tool": "tools", "ToolSet": "toolsets", "Agent": "agents", "Task": "tasks"}


def _entry(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any):
    return {(namespace, name): {"spec": dict(spec), "status": dict(status), "uid": uid,
                                "generation": meta.get("generation")}}


for _plural in INDEXED.values():
    kopf.index(GROUP, VERSION, _plural, id=f"{_plural}_index")(_entry)


class IndexCatalog:
    """resolve.Catalog over the kopf indexes a handler receives in its kwargs."""

    def __init__(self, kwargs: dict[str, Any]):
        self._indexes: dict[str, kopf.Index] = {kind: kwargs[f"{plural}_index"] for kind, plural in INDEXED.items()}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        store = self._indexes[kind].get((namespace, name))
        return next(iter(store), None) if store else None

    def names(self, kind: str, namespace: str) -> Iterable[str]:
        return [name for (ns, name) in self._indexes[kind] if ns == namespace]


def ref_body(kind: str, namespace: str, name: str, uid: str) -> dict[str, Any]:
    """The minimal body kopf.event() needs to post an Event about an object we only know by index."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"namespace": namespace, "name": name, "uid": uid}}
