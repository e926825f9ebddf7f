"""Whether a code tool may run: pure functions of the cluster admin's rules (kubechain/api/codetools.py).

The same checks run at three places, so that none of them is the only line: the validating webhook (the object
is refused), MCP discovery (a Ray task, before it starts a stdio server) and the TaskRun actor (before it starts
a stdio server or submits a ray function). Every refusal names the rule and the setting that changes it.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Iterable

from kubechain.api.codetools import CODE_TOOLS_ALLOWED, LABEL_CODE_TOOLS, CodeToolPolicy
from kubechain.api.runspec import ResolvedExecution
from kubechain.api.v1alpha1 import ToolSetSpec, ToolSpec
from kubechain.api.v1alpha1.mcp import MCPStdio
from kubechain.api.v1alpha1.tool import RayExecution

# Variables that make a program run code it was not asked to, whatever the allowlist says. Matched without
# regard to case (npm reads npm_config_* in any case). The allowlist is the gate; this is the backstop for what
# an admin might list without knowing: the dynamic loader (LD_PRELOAD...), interpreters' start-up hooks
# (PYTHONWARNINGS imports a module, PYTHONSTARTUP, NODE_OPTIONS --require, PERL5OPT, RUBYOPT, JAVA_TOOL_OPTIONS),
# commands programs run on their own (BROWSER - the PYTHONWARNINGS/antigravity exploit -, PAGER, EDITOR,
# LESSOPEN, GIT_SSH_COMMAND), where commands are found (PATH), shell start-up files (BASH_ENV, ENV), glibc's
# iconv modules (GCONV_PATH), npm's configuration (scripts, registry) and Ray's own (RAY_RUNTIME_ENV_HOOK is a
# callable Ray imports).
NEVER_ENV = ("LD_*", "DYLD_*", "PYTHON*", "NODE_*", "NPM_CONFIG_*", "BROWSER", "PATH", "BASH_ENV", "ENV", "SHELL",
             "PERL*", "RUBY*", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "GCONV_PATH", "GIT_*",
             "LESSOPEN", "LESSCLOSE", "PAGER", "EDITOR", "VISUAL", "RAY_*")
STDIO, RAY = "stdio MCP servers", "ray tools"


def _listed(values: Iterable[str]) -> str:
    return ", ".join(values) or "none"


def namespace_allowed(listed: Iterable[str], namespace: str, labels: dict[str, str] | None) -> bool:
    """The admin's opt-in: the namespace is listed (or `*` is), or its Namespace carries the label."""
    listed = set(listed)
    return "*" in listed or namespace in listed or (labels or {}).get(LABEL_CODE_TOOLS) == CODE_TOOLS_ALLOWED


def namespace_problem(policy: CodeToolPolicy, what: str) -> str | None:
    if policy.namespace_allowed:
        return None
    return (f"{what} are not allowed in namespace {policy.namespace!r}: a cluster admin opts a namespace in with "
            f"the Namespace label {LABEL_CODE_TOOLS}={CODE_TOOLS_ALLOWED} or the operator's "
            f"KUBECHAIN_CODE_TOOLS_NAMESPACES")


def never_allowed(name: str) -> bool:
    return any(fnmatchcase(name.upper(), pattern) for pattern in NEVER_ENV)


def env_problem(policy: CodeToolPolicy, names: Iterable[str]) -> str | None:
    for name in names:
        if never_allowed(name):
            return (f"environment variable {name!r} is never allowed for code tools (it makes programs load or "
                    f"run other code: {', '.join(NEVER_ENV)})")
        if not any(fnmatchcase(name, pattern) for pattern in policy.env_names):
            return (f"environment variable {name!r} is not allowed for code tools: the operator's "
                    f"KUBECHAIN_CODE_TOOLS_ENV lists {_listed(policy.env_names)}")
    return None


def stdio_problem(policy: CodeToolPolicy, stdio: MCPStdio) -> str | None:
    """Why this stdio MCP server may not be started for the policy's namespace, or None."""
    if problem := namespace_problem(policy, STDIO):
        return problem
    if "*" not in policy.stdio_commands and stdio.command not in policy.stdio_commands:
        return (f"command {stdio.command!r} is not allowed for stdio MCP servers: the operator's "
                f"KUBECHAIN_MCP_STDIO_COMMANDS lists {_listed(policy.stdio_commands)}")
    return env_problem(policy, [e.name for e in stdio.env])


def function_rule(patterns: Iterable[str], path: str) -> str | None:
    """The pattern that allows calling `module:callable` `path`, or None. `module:*` allows one public name,
    never a dotted path (`tools:os.system` reaches whatever `tools` imported)."""
    module, _, attribute = path.partition(":")
    for pattern in patterns:
        if pattern == "*" or pattern == path:
            return pattern
        if pattern == f"{module}:*" and attribute.isidentifier() and not attribute.startswith("_"):
            return pattern
    return None


def defined_in(rule: str) -> str | None:
    """The module a callable allowed by `rule` must be defined in (checked where it is imported): for
    `module:*`, that module - not something it imported, like `subprocess.getoutput`."""
    return rule.removesuffix(":*") if rule.endswith(":*") and rule != "*" else None


def ray_problem(policy: CodeToolPolicy, ray: RayExecution) -> str | None:
    """Why this ray tool may not run for the policy's namespace, or None."""
    if problem := namespace_problem(policy, RAY):
        return problem
    if function_rule(policy.ray_functions, ray.function) is None:
        return (f"ray function {ray.function!r} is not allowed: the operator's KUBECHAIN_RAY_FUNCTIONS lists "
                f"{_listed(policy.ray_functions)}")
    if keys := sorted(k for k in ray.runtime_env if k not in policy.ray_runtime_env_keys):
        return (f"runtimeEnv {', '.join(keys)} not allowed: the operator's KUBECHAIN_RAY_RUNTIME_ENV_KEYS lists "
                f"{_listed(policy.ray_runtime_env_keys)}")
    env_vars = ray.runtime_env.get("env_vars") or {}
    return env_problem(policy, env_vars if isinstance(env_vars, dict) else [])


def execution_problem(policy: CodeToolPolicy, execution: ResolvedExecution) -> str | None:
    """Why a resolved tool may not run, if it is a code tool (None for every other kind)."""
    if execution.ray is not None:
        return ray_problem(policy, execution.ray)
    if execution.mcp is not None and execution.mcp.server.stdio is not None:
        return stdio_problem(policy, execution.mcp.server.stdio)
    return None


def is_code_tool(execution: ResolvedExecution) -> bool:
    return execution.ray is not None or (execution.mcp is not None and execution.mcp.server.stdio is not None)


def tool_problems(spec: ToolSpec, policy: CodeToolPolicy) -> list[str]:
    return [problem] if spec.execution.ray and (problem := ray_problem(policy, spec.execution.ray)) else []


def toolset_problems(spec: ToolSetSpec, policy: CodeToolPolicy) -> list[str]:
    problems = [f"tool {t.name!r}: {p}" for t in spec.tools for p in tool_problems(t, policy)]
    return problems + [f"MCP server {s.name!r}: {p}" for s in spec.mcp_servers
                       if s.stdio is not None and (p := stdio_problem(policy, s.stdio))]


def uses_code_tools(kind: str, spec: dict[str, Any]) -> bool:
    """Whether a raw Tool or ToolSet spec has a code tool (only then are the Namespace's labels needed)."""
    if kind == "Tool":
        return bool((spec.get("execution") or {}).get("ray"))
    return (any((t.get("execution") or {}).get("ray") for t in spec.get("tools") or [])
            or any(s.get("stdio") for s in spec.get("mcpServers") or []))
