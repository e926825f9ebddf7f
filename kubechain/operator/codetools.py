"""The code-tool rules for one namespace, from the operator's settings and the Namespace's label.

Read fresh from the apiserver each time they are needed (admission of an object with a code tool, an MCP
discovery, an actor's start): never an index that may lag behind an admin's `kubectl label`, and rare enough
to cost nothing. Objects without code tools never ask.
"""
from __future__ import annotations

from kubechain.api.codetools import CodeToolPolicy
from kubechain.core.codetools import namespace_allowed

from .kube import Kube
from .settings import CodeToolSettings


async def policy(kube: Kube, settings: CodeToolSettings, namespace: str) -> CodeToolPolicy:
    allowed = namespace_allowed(settings.namespaces, namespace, None)
    if not allowed:  # not listed: the Namespace's label decides
        allowed = namespace_allowed((), namespace, await kube.namespace_labels(namespace))
    return CodeToolPolicy(namespace=namespace, namespace_allowed=allowed, ray_functions=list(settings.ray_functions),
                          ray_runtime_env_keys=list(settings.ray_runtime_env_keys),
                          stdio_commands=list(settings.stdio_commands), env_names=list(settings.env_names))
