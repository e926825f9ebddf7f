"""Discovery of a stdio MCP server, as a Ray task on a worker: where the server's tools will run, never in the
operator's process (whose account reads Secrets). The operator's gateway submits it (RayGateway.discover_stdio)
and writes the result into the ToolSet's status.mcpServers exactly as for an http server, which the operator
still asks itself.

The code-tool rules come with the task and are checked here, before anything starts: a ToolSet admitted before
a rule changed, or while the webhook was down, gets a failed entry naming the rule and is not ready.
"""
from __future__ import annotations

import asyncio

from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.runspec import secret_key
from kubechain.api.v1alpha1 import MCPServer, MCPServerStatus
from kubechain.core.codetools import stdio_problem


def discover_stdio(server: MCPServer, secrets: dict[str, str], code_tools: CodeToolPolicy) -> MCPServerStatus:
    """Start the server, list its tools, stop it: its status entry (a failure is an entry too, never raised).
    `secrets`: the values of its env's Secret keys, by `secret/key`."""
    from kubechain.runtime import mcpclient  # the SDK only in the task

    if server.stdio is None:
        return mcpclient.failed_status(server, "not a stdio server")
    if refused := stdio_problem(code_tools, server.stdio):
        return mcpclient.failed_status(server, refused)
    return asyncio.run(mcpclient.discover(server, lambda name, key: secrets[secret_key(name, key)]))
