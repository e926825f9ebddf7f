"""The cluster admin's rules for code tools, as the operator hands them to whoever starts one.

A *code tool* runs code of the tenant's choosing where kubechain runs: a `ray` tool (any importable callable,
with a Ray runtime_env) and a stdio MCP server (a process started from a command line and environment). They
are refused unless the cluster admin opted the namespace in (docs/threat-model.md). The operator reads the
rules from its settings and the Namespace, once per use, and sends them with the work (RunSpec.code_tools, an
MCP discovery task): the checks (kubechain/core/codetools.py) run again where the code would run, so an object
admitted before a rule changed, or while the webhook was down, is still refused.

Types only: no I/O, no checks.
"""
from __future__ import annotations

from pydantic import Field

from .v1alpha1.common import GROUP, Model

LABEL_CODE_TOOLS = f"{GROUP}/code-tools"
"""Namespace label that opts a namespace in to code tools (value CODE_TOOLS_ALLOWED). Namespaces are
cluster-scoped: tenants with namespaced Roles cannot label their own."""
CODE_TOOLS_ALLOWED = "allowed"


class CodeToolPolicy(Model):
    """What code tools may run for one namespace. The default allows nothing."""

    namespace: str = Field(default="", description="The namespace these rules are for (named in refusals).")
    namespace_allowed: bool = Field(default=False, description="The cluster admin opted the namespace in: label "
                                    "kubechain.dev/code-tools=allowed, or the operator's "
                                    "KUBECHAIN_CODE_TOOLS_NAMESPACES lists it.")
    ray_functions: list[str] = Field(default_factory=list, description="Callables a ray tool may call "
                                     "(KUBECHAIN_RAY_FUNCTIONS): `module:callable`, `module:*` (a public "
                                     "function defined in that module) or `*` (any).")
    ray_runtime_env_keys: list[str] = Field(default_factory=list, description="Keys a ray tool's runtimeEnv may "
                                            "set (KUBECHAIN_RAY_RUNTIME_ENV_KEYS), e.g. env_vars.")
    stdio_commands: list[str] = Field(default_factory=list, description="Exact `command` values a stdio MCP "
                                      "server may run (KUBECHAIN_MCP_STDIO_COMMANDS; `*`: any).")
    env_names: list[str] = Field(default_factory=list, description="Environment variable names a code tool may "
                                 "set (KUBECHAIN_CODE_TOOLS_ENV; shell-style patterns, e.g. GITHUB_*). Loader and "
                                 "interpreter variables are refused even when listed.")
