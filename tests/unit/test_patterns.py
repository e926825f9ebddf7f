"""Schema patterns cannot backtrack catastrophically: RE2 matches them (linear time), patterns RE2 refuses keep a
Tool, a ToolSet or an MCP server's tools from being Ready (and the webhook refuses them), naming the field."""
import pytest
from mcp_types import Tool

from actors.tools.arguments import check_arguments
from kubechain.api.v1alpha1 import MCPServer
from kubechain.core import admission
from kubechain.core.patterns import MAX_MATCHED_CHARS, pattern_problem
from kubechain.core.resolve import evaluate
from kubechain.runtime import mcpclient


def schema(**properties):
    return {"type": "object", "properties": properties}


def tool_spec(arguments):
    return {"description": "d", "arguments": arguments, "execution": {"builtin": {"name": "echo"}}}


# --- matching ------------------------------------------------------------------------------------------------

def test_the_issues_redos_pattern_is_matched_in_linear_time():
    # `re` took 33.7 s for 29 characters; this is 100,000 of them (no time assertion: a slow match hangs the test)
    nested = schema(x={"type": "string", "pattern": "(a+)+$"})
    assert check_arguments('{"x": "%s!"}' % ("a" * 34), nested)[1] == (
        "invalid arguments (schema check): argument 'x': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!' does not match '(a+)+$'")
    assert check_arguments('{"x": "%s"}' % ("a" * (MAX_MATCHED_CHARS - 1)), nested)[1] is None


@pytest.mark.parametrize("arguments, error", [
    pytest.param('{"id": "ab-12"}', None, id="ordinary-match"),
    pytest.param('{"id": "AB"}', "argument 'id': 'AB' does not match '^[a-z]+-[0-9]+$'", id="ordinary-mismatch"),
    pytest.param('{"id": "%s"}' % ("a" * (MAX_MATCHED_CHARS + 1)),
                 "argument 'id': cannot be matched against pattern '^[a-z]+-[0-9]+$': it is longer than 100,000 "
                 "characters, the most a pattern is matched against", id="too-long"),
    pytest.param('{"id": "a-1", "n_1": 2}', None, id="pattern-property"),
    pytest.param('{"id": "a-1", "n_1": "x"}', "argument 'n_1': 'x' is not of type 'integer'", id="pattern-property-typed"),
    pytest.param('{"id": "a-1", "other": 1}', "arguments: 'other' does not match any of the regexes: '^n_[0-9]+$'",
                 id="additional-refused"),
])
def test_ordinary_patterns_behave_as_before(arguments, error):
    ids = {**schema(id={"type": "string", "pattern": "^[a-z]+-[0-9]+$"}),
           "patternProperties": {"^n_[0-9]+$": {"type": "integer"}}, "additionalProperties": False}
    got = check_arguments(arguments, ids)[1]
    assert got == (None if error is None else f"invalid arguments (schema check): {error}")


# --- readiness and admission -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, problem", [
    pytest.param(schema(x={"type": "string", "pattern": "^(?=a)b"}),
                 "arguments.properties.x.pattern '^(?=a)b' is refused: invalid perl operator: (?=", id="lookahead"),
    pytest.param(schema(x={"type": "array", "items": {"type": "string", "pattern": r"(a)\1"}}),
                 r"arguments.properties.x.items.pattern '(a)\\1' is refused: invalid escape sequence: \1",
                 id="backreference-in-items"),
    pytest.param({"type": "object", "patternProperties": {"a{2000}": {}}},
                 "arguments.patternProperties['a{2000}'] 'a{2000}' is refused: invalid repetition size: {2000}",
                 id="pattern-property"),
    pytest.param({"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False},
                 "arguments: patternProperties cannot be combined with unevaluatedProperties", id="unevaluated"),
])
def test_a_tool_with_a_pattern_re2_refuses_is_not_ready_and_refused(arguments, problem):
    readiness = evaluate("Tool", "ns", tool_spec(arguments), None)
    assert (readiness.ready, readiness.reason) == (False, "InvalidTool")
    assert readiness.message.startswith(problem)
    assert "linear time" in readiness.message or "backtracking" in readiness.message
    assert admission.tool(tool_spec(arguments))[0].startswith(problem)
    inline = {"tools": [{"name": "t", **tool_spec(arguments)}]}
    assert admission.toolset(inline)[0].startswith(f"tool 't': {problem}")


@pytest.mark.parametrize("arguments", [
    pytest.param(schema(x={"type": "string", "pattern": "(a+)+$"}), id="nested-quantifiers-are-safe-in-re2"),
    pytest.param(schema(email={"type": "string", "pattern": r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$"}), id="email"),
    pytest.param(schema(x={"type": "object", "properties": {"pattern": {"type": "string"}}}), id="a-property-named-pattern"),
    pytest.param(schema(x={"type": "string", "default": "(?=x)", "examples": ["(?=y)"]}), id="not-a-pattern"),
])
def test_ordinary_schemas_stay_ready(arguments):
    assert pattern_problem(arguments, "arguments") is None
    assert evaluate("Tool", "ns", tool_spec(arguments), None).ready


def test_an_mcp_tool_with_an_unsafe_pattern_keeps_its_toolset_not_ready():
    server = MCPServer.model_validate({"name": "srv", "stdio": {"command": "s"}})
    bad = schema(q={"type": "string", "pattern": "(?<=a)b"})
    found = mcpclient.server_status(server, [Tool(name="ok", input_schema=schema()), Tool(name="look", input_schema=bad)])
    spec = {"mcpServers": [server.to_wire()]}
    readiness = evaluate("ToolSet", "ns", spec, None, {"mcpServers": [found.to_entry()]})
    assert (readiness.ready, readiness.reason) == (False, "InvalidTool")
    assert readiness.message.startswith("MCP server 'srv': tool 'look': inputSchema.properties.q.pattern '(?<=a)b' "
                                        "is refused")
