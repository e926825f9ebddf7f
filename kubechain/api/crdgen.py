"""Generate CustomResourceDefinitions from the pydantic models (`make crds`, `kubechain crds`).

Pydantic's JSON Schema is close to what Kubernetes wants; a CRD needs a *structural* schema:
no $ref, no nullable unions, no `additionalProperties: false`, free-form maps marked with
`x-kubernetes-preserve-unknown-fields`. This module does exactly that translation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import v1alpha2
from .v1alpha1 import CATEGORY, GROUP, KINDS, VERSION, KindInfo

STORAGE_VERSION = VERSION  # v1alpha1: the version the operator and the actors speak
# Where the apiserver finds the conversion webhook in a cluster (kuberay/ deploys this Service). The operator
# puts its CA into caBundle at start-up, or points the CRD at its own URL (KUBECHAIN_WEBHOOK_HOST).
CONVERSION_SERVICE = {"namespace": "kubechain-system", "name": "kubechain-webhooks", "path": "/convert", "port": 443}

KEEP = {"type", "description", "properties", "items", "required", "enum", "default", "format", "pattern",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems",
        "maxItems", "oneOf", "additionalProperties", "x-kubernetes-preserve-unknown-fields"}


def structural(schema: dict[str, Any], defs: dict[str, Any], *, defaults: bool = True) -> dict[str, Any]:
    """One pydantic schema node, rewritten as a structural CRD schema node."""
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # a field's own description wins over the type's docstring
    if "anyOf" in node:  # Optional[X]: omitted fields stand for null, so keep only X
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional are not supported in CRDs: {schema}")
        inner = structural(options[0], defs, defaults=defaults)
        node = {**inner, **{k: v for k, v in node.items() if k != "default" or v is not None}}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("additionalProperties"), dict):  # a map with typed values, e.g. spec.responses
        node["additionalProperties"] = structural(node["additionalProperties"], defs, defaults=defaults)
    else:
        node.pop("additionalProperties", None)
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    # Empty defaults are what pydantic fills anyway, and apiserver 1.20 reads `default: ""` as null.
    if node.get("default", 0) in (None, "", [], {}) or not defaults:
        node.pop("default", None)
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[inclusive], node[bound] = node[bound], True  # OpenAPI v3.0 spelling
    out = {k: v for k, v in node.items() if k in KEEP}
    if "properties" in out:
        out["properties"] = {k: structural(v, defs, defaults=defaults) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = structural(out["items"], defs, defaults=defaults)
    if "description" in out:
        out["description"] = " ".join(out["description"].split())
    return out


def schema_of(model: type, *, defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}), defaults=defaults)


def version(info: KindInfo, name: str) -> dict[str, Any]:
    spec_schema = schema_of(info.spec, defaults=True)
    # Status is written by the operator and the actors; server-side defaults there would only add noise.
    status_schema = schema_of(info.status, defaults=False)
    return {
        "name": name, "served": True, "storage": name == STORAGE_VERSION,
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {k: v for k, v in {"name": c.name, "type": c.type, "jsonPath": c.json_path,
                               "description": c.description, "priority": c.priority}.items() if v}
            for c in info.columns],
        "schema": {"openAPIV3Schema": {
            "type": "object", "description": info.description,
            "properties": {
                "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
                "kind": {"type": "string", "description": "REST resource this object represents."},
                "metadata": {"type": "object"},
                "spec": {**spec_schema, "description": f"Desired state of the {info.kind}."},
                "status": {**status_schema, "description": f"Observed state of the {info.kind}."},
            },
            "required": ["spec"],
        }},
    }


def crd(info: KindInfo) -> dict[str, Any]:
    v2 = next(k for k in v1alpha2.KINDS if k.kind == info.kind)
    # Versions that differ only in apiVersion need no webhook; the LLM's spec differs (api/conversion.py).
    conversion = {"strategy": "None"} if v2 is info else {"strategy": "Webhook", "webhook": {
        "conversionReviewVersions": ["v1"], "clientConfig": {"service": CONVERSION_SERVICE}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.name},
        "spec": {
            "group": GROUP,
            "scope": info.scope,
            "names": {"kind": info.kind, "plural": info.plural, "singular": info.singular or info.kind.lower(),
                      "listKind": f"{info.kind}List", "shortNames": list(info.short_names), "categories": [CATEGORY]},
            "versions": [version(info, VERSION), version(v2, v1alpha2.VERSION)],
            "conversion": conversion,
        },
    }


def render(info: KindInfo) -> str:
    header = "# Generated from kubechain/api by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump(crd(info), sort_keys=False, width=120)


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for info in KINDS:
        path = directory / f"{GROUP}_{info.plural}.yaml"
        path.write_text(render(info))
        paths.append(path)
    kustomization = directory / "kustomization.yaml"  # so kuberay/ can use crds/ as a kustomize base
    kustomization.write_text("# Generated by `make crds`. Do not edit.\n" + yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "resources": [p.name for p in paths]}, sort_keys=False))
    return [*paths, kustomization]
