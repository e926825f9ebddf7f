"""Code tools (ray tools, stdio MCP servers) are the cluster admin's opt-in: the pure rules, the admission checks,
and the same rules where the code would run (the actor's executor, its MCP sessions, the discovery task)."""
import asyncio
import sys

import pytest

from actors.tools.executor import LocalToolExecutor, call_function
from actors.tools.mcp import MCPSessions
from actors.tools.mcp_discovery import discover_stdio
from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.runspec import ResolvedExecution, ResolvedMCP, ResolvedTool
from kubechain.api.v1alpha1 import MCPServer, ToolSetSpec, ToolSpec
from kubechain.core import admission
from kubechain.core.codetools import (env_problem, function_rule, namespace_allowed, never_allowed, ray_problem,
                                      stdio_problem, toolset_problems, uses_code_tools)
from kubechain.operator import codetools as operator_codetools
from kubechain.operator.settings import CodeToolSettings

OPEN = CodeToolPolicy(namespace="team-a", namespace_allowed=True, ray_functions=["kubechain.demo.raytools:*"],
                      ray_runtime_env_keys=["env_vars"], stdio_commands=["mcp-server-time"],
                      env_names=["GITHUB_*", "TZ", "*_TOKEN"])
CLOSED = OPEN.model_copy(update={"namespace": "team-b", "namespace_allowed": False})
# The exploit on main: an allowlisted Python server, and two variables that make Python run a shell command.
INJECTION = [{"name": "PYTHONWARNINGS", "value": "all:0:antigravity.x:0:0"},
             {"name": "BROWSER", "value": "/bin/sh -c 'touch /tmp/pwned' #%s"}]


def stdio(command="mcp-server-time", env=(), args=()):
    return MCPServer.model_validate({"name": "time", "stdio": {"command": command, "args": list(args), "env": list(env)}})


def ray(function, **options):
    return ToolSpec.model_validate({"description": "d", "execution": {"ray": {"function": function, **options}}})


# --- the rules -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("listed, labels, allowed", [
    pytest.param((), None, False, id="nothing->refused"),
    pytest.param((), {"kubechain.dev/code-tools": "allowed"}, True, id="label->allowed"),
    pytest.param((), {"kubechain.dev/code-tools": "yes"}, False, id="other-label-value->refused"),
    pytest.param(("team-a",), None, True, id="listed->allowed"),
    pytest.param(("team-b",), None, False, id="other-listed->refused"),
    pytest.param(("*",), None, True, id="star->allowed"),
])
def test_a_namespace_is_opted_in_by_the_admin(listed, labels, allowed):
    assert namespace_allowed(listed, "team-a", labels) is allowed


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "PYTHONWARNINGS",
                                  "PYTHONPATH", "PYTHONSTARTUP", "NODE_OPTIONS", "npm_config_script_shell", "BROWSER",
                                  "PATH", "BASH_ENV", "PERL5OPT", "RUBYOPT", "JAVA_TOOL_OPTIONS", "GIT_SSH_COMMAND",
                                  "RAY_RUNTIME_ENV_HOOK", "GCONV_PATH", "pythonpath"])
def test_loader_and_interpreter_variables_are_never_allowed_even_when_listed(name):
    assert never_allowed(name)
    everything = OPEN.model_copy(update={"env_names": ["*", name]})
    assert "is never allowed for code tools" in env_problem(everything, [name])


@pytest.mark.parametrize("names, problem", [
    pytest.param(["GITHUB_TOKEN", "TZ", "API_TOKEN"], None, id="listed-and-patterns"),
    pytest.param(["HOME"], "environment variable 'HOME' is not allowed for code tools: the operator's "
                           "KUBECHAIN_CODE_TOOLS_ENV lists GITHUB_*, TZ, *_TOKEN", id="unlisted"),
    pytest.param(["tz"], "environment variable 'tz' is not allowed", id="allowlist-is-case-sensitive"),
])
def test_env_names_pass_the_allowlist(names, problem):
    found = env_problem(OPEN, names)
    assert found == problem if problem is None else found.startswith(problem)


@pytest.mark.parametrize("patterns, path, rule", [
    pytest.param(["m.tools:embed"], "m.tools:embed", "m.tools:embed", id="exact"),
    pytest.param(["m.tools:embed"], "m.tools:other", None, id="exact-other"),
    pytest.param(["m.tools:*"], "m.tools:embed", "m.tools:*", id="module-star"),
    pytest.param(["m.tools:*"], "m.tools:os.system", None, id="module-star-no-dotted-path"),
    pytest.param(["m.tools:*"], "m.tools:_private", None, id="module-star-no-private"),
    pytest.param(["m.tools:*"], "m.toolsx:embed", None, id="module-star-other-module"),
    pytest.param(["m:*"], "m.tools:embed", None, id="module-star-not-submodules"),
    pytest.param(["*"], "subprocess:getoutput", "*", id="star-anything"),
    pytest.param([], "subprocess:getoutput", None, id="none"),
])
def test_ray_functions_pass_the_allowlist(patterns, path, rule):
    assert function_rule(patterns, path) == rule


@pytest.mark.parametrize("policy, spec, problem", [
    pytest.param(CLOSED, ray("kubechain.demo.raytools:describe_task"),
                 "ray tools are not allowed in namespace 'team-b': a cluster admin opts a namespace in with the "
                 "Namespace label kubechain.dev/code-tools=allowed or the operator's KUBECHAIN_CODE_TOOLS_NAMESPACES",
                 id="namespace-closed"),
    pytest.param(OPEN, ray("subprocess:getoutput"), "ray function 'subprocess:getoutput' is not allowed: the "
                 "operator's KUBECHAIN_RAY_FUNCTIONS lists kubechain.demo.raytools:*", id="function-unlisted"),
    pytest.param(OPEN, ray("kubechain.demo.raytools:fail", runtimeEnv={"pip": ["evil"], "working_dir": "s3://x"}),
                 "runtimeEnv pip, working_dir not allowed: the operator's KUBECHAIN_RAY_RUNTIME_ENV_KEYS lists "
                 "env_vars", id="runtime-env-code"),
    pytest.param(OPEN, ray("kubechain.demo.raytools:fail", runtimeEnv={"env_vars": {"PYTHONPATH": "/tmp"}}),
                 "environment variable 'PYTHONPATH' is never allowed", id="runtime-env-vars-never"),
    pytest.param(OPEN, ray("kubechain.demo.raytools:fail", runtimeEnv={"env_vars": {"GITHUB_TOKEN": "t"}}),
                 None, id="allowed"),
])
def test_ray_tools(policy, spec, problem):
    found = ray_problem(policy, spec.execution.ray)
    assert found == problem if problem is None or found is None else found.startswith(problem)
    assert (found is None) == (problem is None)


@pytest.mark.parametrize("policy, server, problem", [
    pytest.param(CLOSED, stdio(), "stdio MCP servers are not allowed in namespace 'team-b'", id="namespace-closed"),
    pytest.param(OPEN, stdio("sh", args=["-c", "id"]), "command 'sh' is not allowed for stdio MCP servers: the "
                 "operator's KUBECHAIN_MCP_STDIO_COMMANDS lists mcp-server-time", id="command-unlisted"),
    pytest.param(OPEN, stdio(env=INJECTION), "environment variable 'PYTHONWARNINGS' is never allowed",
                 id="pythonwarnings-browser-injection"),
    pytest.param(OPEN.model_copy(update={"env_names": ["*"]}), stdio(env=INJECTION[1:]),
                 "environment variable 'BROWSER' is never allowed", id="browser-even-with-star"),
    pytest.param(OPEN, stdio(env=[{"name": "TZ", "value": "UTC"}]), None, id="allowed"),
])
def test_stdio_servers(policy, server, problem):
    found = stdio_problem(policy, server.stdio)
    assert (found is None) == (problem is None), found
    assert found is None or found.startswith(problem)


# --- admission -----------------------------------------------------------------------------------------------

def test_admission_refuses_code_tools_without_the_admins_opt_in():
    spec = {"description": "d", "execution": {"ray": {"function": "subprocess:getoutput"}}}
    assert uses_code_tools("Tool", spec)
    [problem] = admission.tool(spec)  # no policy: nothing is allowed
    assert problem.startswith("ray tools are not allowed in namespace")
    [problem] = admission.tool(spec, OPEN)
    assert problem.startswith("ray function 'subprocess:getoutput' is not allowed")
    assert admission.tool({**spec, "execution": {"ray": {"function": "kubechain.demo.raytools:fail"}}}, OPEN) == []
    assert not uses_code_tools("Tool", {"description": "d", "execution": {"builtin": {"name": "echo"}}})


def test_admission_checks_inline_ray_tools_and_stdio_servers_of_a_toolset():
    raw = {"tools": [{"name": "sh", "description": "d", "execution": {"ray": {"function": "os:system"}}}],
           "mcpServers": [{"name": "time", "stdio": {"command": "mcp-server-time", "env": INJECTION}},
                          {"name": "web", "http": {"url": "http://mcp.example/mcp"}}]}
    assert uses_code_tools("ToolSet", raw) and not uses_code_tools("ToolSet", {"mcpServers": raw["mcpServers"][1:]})
    problems = admission.toolset(raw, OPEN)
    assert problems[0].startswith("tool 'sh': ray function 'os:system' is not allowed")
    assert problems[1].startswith("MCP server 'time': environment variable 'PYTHONWARNINGS' is never allowed")
    assert len(problems) == 2  # the http server runs nothing here
    assert toolset_problems(ToolSetSpec.model_validate({"mcpServers": raw["mcpServers"][1:]}), CLOSED) == []


def test_the_operator_reads_the_label_only_when_the_settings_do_not_allow_the_namespace():
    class Labels:
        asked: list[str] = []

        async def namespace_labels(self, name):
            self.asked.append(name)
            return {"kubechain.dev/code-tools": "allowed"} if name == "labelled" else {}

    kube, settings = Labels(), CodeToolSettings(namespaces=("listed",), ray_functions=("m:*",), stdio_commands=(),
                                                env_names=("TZ",), ray_runtime_env_keys=())
    listed, labelled, other = (asyncio.run(operator_codetools.policy(kube, settings, ns))
                               for ns in ("listed", "labelled", "other"))
    assert (listed.namespace_allowed, labelled.namespace_allowed, other.namespace_allowed) == (True, True, False)
    assert kube.asked == ["labelled", "other"] and listed.ray_functions == ["m:*"] and other.env_names == ["TZ"]


def test_settings_are_empty_lists_by_default(monkeypatch):
    for name in ("KUBECHAIN_CODE_TOOLS_NAMESPACES", "KUBECHAIN_RAY_FUNCTIONS", "KUBECHAIN_MCP_STDIO_COMMANDS"):
        monkeypatch.delenv(name, raising=False)
    assert CodeToolSettings().namespaces == () and CodeToolSettings().stdio_commands == ()
    monkeypatch.setenv("KUBECHAIN_RAY_FUNCTIONS", " a:b , c:* ,")
    assert CodeToolSettings().ray_functions == ("a:b", "c:*")


# --- where the code runs: refused before anything starts ----------------------------------------------------

def marker_server(tmp_path, env=()):
    """A stdio 'server' that only leaves a file behind: if the file exists, something started."""
    marker = tmp_path / "started"
    return marker, MCPServer.model_validate({"name": "probe", "timeoutSeconds": 10, "stdio": {
        "command": sys.executable, "args": ["-c", f"open({str(marker)!r}, 'w')"], "env": list(env)}})


def test_the_actor_refuses_the_env_injection_at_run_time_and_starts_nothing(tmp_path):
    marker, server = marker_server(tmp_path, INJECTION)
    tool = ResolvedTool(name="probe__x", description="x", parameters={"type": "object"}, execution=ResolvedExecution(
        mcp=ResolvedMCP(namespace="team-a", toolset="kit", server=server, tool="x")))
    policy = OPEN.model_copy(update={"stdio_commands": [sys.executable], "env_names": ["*"]})

    async def main():
        executor = LocalToolExecutor([tool], code_tools=policy)
        outcome = await executor.execute("probe__x", "{}", "1", "k1")
        sessions = MCPSessions(lambda *_: "", policy)  # the sessions check by themselves too
        direct = await sessions.call(tool.execution.mcp, {})
        return outcome, direct, sessions._sessions

    outcome, direct, opened = asyncio.run(main())
    assert outcome.error.startswith("environment variable 'PYTHONWARNINGS' is never allowed for code tools")
    assert direct.error.startswith("MCP server 'probe': environment variable 'PYTHONWARNINGS' is never allowed")
    assert opened == {} and not marker.exists()


def test_the_actor_refuses_code_tools_of_a_namespace_that_is_not_opted_in(tmp_path):
    marker, server = marker_server(tmp_path)
    tools = [ResolvedTool(name="probe__x", description="x", parameters={"type": "object"}, execution=ResolvedExecution(
                 mcp=ResolvedMCP(namespace="team-b", toolset="kit", server=server, tool="x"))),
             ResolvedTool(name="sh", description="x", parameters={"type": "object"},
                          execution=ray("subprocess:getoutput").execution)]

    async def main():
        executor = LocalToolExecutor(tools)  # a RunSpec without rules: nothing may run
        return [await executor.execute(name, '{"cmd": "id"}', "1", "k") for name in ("probe__x", "sh")]

    stdio_outcome, ray_outcome = asyncio.run(main())  # no Ray here: the ray tool is refused before it is submitted
    assert stdio_outcome.error.startswith("stdio MCP servers are not allowed in namespace ''")
    assert ray_outcome.error.startswith("ray tools are not allowed in namespace ''")
    assert not marker.exists()


def test_the_discovery_task_checks_the_rules_before_it_starts_the_server(tmp_path):
    marker, server = marker_server(tmp_path, INJECTION)
    status = discover_stdio(server, {}, OPEN.model_copy(update={"stdio_commands": ["*"], "env_names": ["*"]}))
    assert not status.ready and status.message.startswith("environment variable 'PYTHONWARNINGS' is never allowed")
    status = discover_stdio(server, {}, CLOSED)
    assert not status.ready and status.message.startswith("stdio MCP servers are not allowed in namespace 'team-b'")
    assert not marker.exists()


def test_a_module_star_rule_runs_only_functions_defined_in_that_module():
    with pytest.raises(ValueError, match="boom"):  # defined in raytools: called
        call_function("kubechain.demo.raytools:fail", {}, "kubechain.demo.raytools")
    with pytest.raises(PermissionError, match="not defined in kubechain.demo.raytools"):  # imported there: refused
        call_function("kubechain.demo.raytools:Any", {}, "kubechain.demo.raytools")
