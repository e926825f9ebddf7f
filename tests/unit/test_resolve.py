"""Readiness and tool resolution over an in-memory catalog."""
import pytest

from kubechain.api.builtins import BUILTIN_ARGUMENTS
from kubechain.api.runspec import TaskRunRef
from kubechain.core.resolve import evaluate, run_spec


class DictCatalog:
    def __init__(self, objects):
        self.objects = objects  # {(kind, name): {"spec":..., "status":...}}

    def get(self, kind, namespace, name):
        return self.objects.get((kind, name))

    def names(self, kind, namespace):
        return [n for k, n in self.objects if k == kind]


READY = {"ready": True, "message": "ok"}
LLM = {"spec": {"model": "m", "baseURL": "http://x/v1"}, "status": READY}
CALC = {"spec": {"description": "math", "execution": {"builtin": {"name": "calculator"}}}, "status": READY}
KIT = {"spec": {"toolRefs": [{"name": "calc.v2"}],
                "tools": [{"name": "echo", "description": "e", "arguments": {"type": "object", "properties": {"x": {}}},
                           "execution": {"builtin": {"name": "echo"}}}]},
       "status": {**READY, "tools": ["echo", "calc_v2"]}}
AGENT = {"spec": {"llmRef": {"name": "llm"}, "systemPrompt": "be nice", "toolsetRefs": [{"name": "kit"}]}}


def catalog(**overrides):
    objects = {("LLM", "llm"): LLM, ("Tool", "calc.v2"): CALC, ("ToolSet", "kit"): KIT, ("Agent", "a"): AGENT}
    for key, value in overrides.items():
        kind, name = key.split("__")
        objects[(kind, name.replace("_", "."))] = value
        if value is None:
            del objects[(kind, name.replace("_", "."))]
    return DictCatalog(objects)


@pytest.mark.parametrize("overrides, reason, message", [
    pytest.param({}, "Ready", "LLM 'llm' and 2 tools ready", id="all-ready"),
    pytest.param({"LLM__llm": None}, "LLMNotFound", "LLM 'llm' not found", id="llm-missing"),
    pytest.param({"LLM__llm": {"spec": {}, "status": {}}}, "DependencyPending", "LLM 'llm' is not reconciled yet",
                 id="llm-not-reconciled"),
    pytest.param({"LLM__llm": {"spec": {}, "status": {"ready": False, "message": "Secret 's' not found"}}},
                 "LLMNotReady", "LLM 'llm' is not ready: Secret 's' not found", id="llm-broken"),
    pytest.param({"ToolSet__kit": None}, "ToolSetNotFound", "ToolSet 'kit' not found", id="toolset-missing"),
])
def test_agent_readiness(overrides, reason, message):
    readiness = evaluate("Agent", "ns", AGENT["spec"], catalog(**overrides))
    assert (readiness.reason, readiness.message) == (reason, message)
    assert readiness.ready is (reason == "Ready")


def test_a_started_run_rides_out_an_unreachable_llm_but_not_a_wrong_key():
    from kubechain.api.v1alpha1 import AgentSpec
    from kubechain.core.resolve import agent_readiness

    def llm(reason):
        return {"spec": LLM["spec"], "status": {"ready": False, "message": "no answer",
                                                 "conditions": [{"type": "Ready", "status": "False", "reason": reason}]}}
    spec = AgentSpec.model_validate(AGENT["spec"])
    outage = catalog(LLM__llm=llm("Unreachable"))
    assert not agent_readiness("ns", spec, outage).ready  # new runs wait for the provider
    assert agent_readiness("ns", spec, outage, started=True).ready  # a backing-off run's new actor may start
    assert not agent_readiness("ns", spec, catalog(LLM__llm=llm("Unauthorized")), started=True).ready


def test_toolset_readiness_names_the_tool():
    assert evaluate("ToolSet", "ns", KIT["spec"], catalog()).tools == ["echo", "calc_v2"]
    broken = evaluate("ToolSet", "ns", KIT["spec"], catalog(Tool__calc_v2={"spec": {}, "status": {"ready": False,
                                                                                                   "message": "bad"}}))
    assert broken.message == "Tool 'calc.v2' is not ready: bad"
    bad_schema = {"tools": [{"name": "t", "description": "d", "arguments": {"type": "object", "properties": 3},
                             "execution": {"builtin": {"name": "echo"}}}]}
    assert evaluate("ToolSet", "ns", bad_schema, catalog()).message.startswith("tool 't': arguments is not a valid JSON Schema")


def test_invalid_spec_is_reported_not_raised():
    readiness = evaluate("Tool", "ns", {"description": "x", "execution": {}}, catalog())
    assert readiness.reason == "InvalidSpec" and "exactly one of builtin, http, container, delegate" in readiness.message


def test_run_spec_resolves_tools_with_builtin_default_schemas():
    spec = run_spec(TaskRunRef(namespace="ns", name="r", uid="u"), "a", "hello", catalog(), api_key="sk-secret-123")
    assert [t.name for t in spec.tools] == ["echo", "calc_v2"]
    assert spec.tools[1].parameters == BUILTIN_ARGUMENTS["calculator"]
    assert spec.tools[0].parameters["properties"] == {"x": {}}
    assert spec.api_key.get_secret_value() == "sk-secret-123" and "sk-secret-123" not in repr(spec)
    assert spec.system_prompt == "be nice" and spec.user_input == "hello" and spec.llm.model == "m"


def delegating(*targets):
    """An agent whose ToolSet has one delegate tool per target."""
    tools = [{"name": f"ask_{t}", "description": "d", "execution": {"delegate": {"agentRef": {"name": t}}}}
             for t in targets]
    return {"spec": {"tools": tools}, "status": {**READY, "tools": [f"ask_{t}" for t in targets]}}


@pytest.mark.parametrize("targets, reason, message", [
    pytest.param(("a",), "Ready", "LLM 'llm' and 1 tools ready", id="to itself: exists, no deadlock"),
    pytest.param(("b",), "Ready", "LLM 'llm' and 1 tools ready", id="to an agent that delegates back (a cycle)"),
    pytest.param(("ghost", "b", "nobody"), "DelegateNotFound",
                 "delegate tool 'ask_ghost': Agent 'ghost' not found; delegate tool 'ask_nobody': Agent 'nobody' "
                 "not found", id="to agents that do not exist"),
])
def test_delegate_targets_must_exist_not_be_ready(targets, reason, message):
    agent = {"llmRef": {"name": "llm"}, "systemPrompt": "p", "toolsetRefs": [{"name": "team"}]}
    b = {"spec": {**agent, "toolsetRefs": [{"name": "back"}]}, "status": {"ready": False, "message": "not yet"}}
    objects = catalog(ToolSet__team=delegating(*targets), ToolSet__back=delegating("a"), Agent__b=b)
    readiness = evaluate("Agent", "ns", agent, objects)
    assert (readiness.reason, readiness.message) == (reason, message)
