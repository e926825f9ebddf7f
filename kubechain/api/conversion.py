"""Conversion between kubechain.dev/v1alpha1 (the storage version, the one the operator speaks) and v1alpha2.

Only the LLM's spec differs: v1alpha2 groups its fields (endpoint, credentials, parameters). The mapping is
a bijection on the fields that are set - nothing is defaulted on the way - so every object converts both
ways and back unchanged, and objects stored in v1alpha1 need no migration. Pure functions; the operator
serves them as the CRDs' conversion webhook (kubechain/operator/webhook_server.py).
"""
from __future__ import annotations

import copy
from typing import Any

from kubechain.api.v1alpha1 import GROUP

VERSIONS = ("v1alpha1", "v1alpha2")
# v1alpha1 field -> (v1alpha2 group, field)
LLM_GROUPS = {
    "baseURL": ("endpoint", "baseURL"), "requestTimeoutSeconds": ("endpoint", "requestTimeoutSeconds"),
    "maxRetries": ("endpoint", "maxRetries"), "apiKeySecretRef": ("credentials", "apiKeySecretRef"),
    "temperature": ("parameters", "temperature"), "maxTokens": ("parameters", "maxTokens"),
    "maxCompletionTokens": ("parameters", "maxCompletionTokens"), "extraBody": ("parameters", "extraBody"),
}


class ConversionError(ValueError):
    pass


def convert(obj: dict[str, Any], desired_api_version: str) -> dict[str, Any]:
    """`obj` (a whole object) as `desired_api_version`."""
    group, _, desired = desired_api_version.partition("/")
    current = obj.get("apiVersion", "").partition("/")[2]
    if group != GROUP or desired not in VERSIONS or current not in VERSIONS:
        raise ConversionError(f"cannot convert {obj.get('apiVersion')} to {desired_api_version}")
    out = copy.deepcopy(obj)
    out["apiVersion"] = desired_api_version
    if obj.get("kind") == "LLM" and current != desired and isinstance(obj.get("spec"), dict):
        out["spec"] = llm_to_v1alpha2(obj["spec"]) if desired == "v1alpha2" else llm_to_v1alpha1(obj["spec"])
    return out


def llm_to_v1alpha2(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in LLM_GROUPS:
            group, field = LLM_GROUPS[key]
            out.setdefault(group, {})[field] = value
        else:
            out[key] = value
    return out


def llm_to_v1alpha1(spec: dict[str, Any]) -> dict[str, Any]:
    back = {(group, field): key for key, (group, field) in LLM_GROUPS.items()}
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("endpoint", "credentials", "parameters") and isinstance(value, dict):
            for field, inner in value.items():
                out[back.get((key, field), field)] = inner
        else:
            out[key] = value
    return out
