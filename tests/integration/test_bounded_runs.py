"""Runs that cannot progress say why and end; inputs that would collide or leak do not (issue 17, items 3-6), on the
real control plane, Ray head and scripted LLM server. Each case ends in its documented state with its documented
message, and nothing runs twice."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from harness.localenv import kubectl

from .chaos import wait_until
from .conftest import agent, llm, secret, task, toolset
from .test_delegation import delegate, runs
from .test_human_input import cli

pytestmark = pytest.mark.integration


def agents(kube, stack, **scripts: tuple[list[dict], list[dict]]) -> None:
    """One agent per keyword (its own model, LLM and ToolSet): name=(script, inline tools)."""
    objects: list[dict] = [secret()]
    for name, (steps, tools) in scripts.items():
        model = f"{kube.namespace}-{name}"
        stack.llm.set_script(model, steps)
        objects += [llm(name, stack.llm.base_url, model), toolset(f"{name}-tools", inline=tools),
                    agent(name, name, [f"{name}-tools"])]
    kube.apply(objects)


def journal(kube, obj: dict) -> list[dict]:
    """The run's whole tool journal: sealed chunks (a long result moves calls out of line) and the status tail."""
    from kubernetes import config

    from kubechain.clients.transcript import complete

    with config.new_client_from_config(str(kube.env.kubeconfig)) as api:
        _, _, calls = complete(obj, api)
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in calls]


def warnings(kube, name: str, reason: str) -> list[dict]:
    return [e for e in kube.events(name) if e["type"] == "Warning" and e["reason"] == reason]


def condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"].get("conditions", []) if c["type"] == type_)


ASK = {"name": "ask", "description": "ask the user", "execution": {"builtin": {"name": "ask_human"}}}
CALC = {"name": "calc", "description": "arithmetic, needs a human's OK", "requiresApproval": True,
        "execution": {"builtin": {"name": "calculator"}}}


# --- item 3: no silent waits ---------------------------------------------------------------------------------
def test_a_delegate_to_a_missing_agent_keeps_the_agent_not_ready_and_a_call_to_it_fails(kube, stack):
    agents(kube, stack, boss=([{"content": "never asked"}], [delegate("ask_ghost", "ghost")]))
    # Not its first not-ready message: that may be its LLM still being checked with the provider.
    boss = kube.wait_for("agent", "boss", lambda o: (o.get("status") or {}).get("message") ==
                         "delegate tool 'ask_ghost': Agent 'ghost' not found", timeout=60, what="not ready for ghost")
    assert boss["status"]["ready"] is False
    assert condition(boss, "Ready")["reason"] == "DelegateNotFound"

    # A run of it waits visibly (message, condition Stalled, one Warning) and ends at its timeout, holding nothing.
    kube.apply([task("q", "boss", "go", timeoutSeconds=4)])
    stalled = kube.wait_for("taskrun", "q-run", lambda o: (o.get("status") or {}).get("conditions"))
    expected = "waiting for Agent 'boss' to be ready: delegate tool 'ask_ghost': Agent 'ghost' not found"
    assert stalled["status"]["message"] == expected
    assert (condition(stalled, "Stalled")["status"], condition(stalled, "Stalled")["reason"]) == ("True", "AgentNotReady")
    failed = kube.wait_phase("q-run", "Failed", timeout=30)
    assert failed["status"]["phaseHistory"][-1]["reason"] == "Timeout"
    assert failed["status"]["error"] == f"timed out: still not started 4 s after it was created ({expected})"
    assert len(warnings(kube, "q-run", "AgentNotReady")) == 1
    assert not [e for e in kube.events("q-run") if e["reason"] == "ActorStarted"]  # no actor, ever

    # The target appearing makes it ready (self-delegation and cycles would too: the target must exist, not be ready).
    agents(kube, stack, ghost=([{"content": "boo"}], []))
    kube.wait_ready("agent", "boss")

    # An Agent gone when the call is made: the call fails as a tool error, no child run is created, the run goes on.
    agents(kube, stack, lead=([{"tool_calls": [{"name": "ask", "arguments": {"question": "go on?"}}]},
                               {"tool_calls": [{"name": "ask_helper", "arguments": {"message": "help"}}]},
                               {"content": "{last_tool_result}"}], [ASK, delegate("ask_helper", "helper")]),
           helper=([{"content": "helped"}], []))
    kube.wait_ready("agent", "lead")
    kube.apply([task("l", "lead", "go")])
    kube.wait_phase("l-run", "PausedForUserInput")
    kube.run("delete", "agent", "helper")
    lead = kube.wait_ready("agent", "lead", ready=False)
    assert lead["status"]["message"] == "delegate tool 'ask_helper': Agent 'helper' not found"
    assert cli(kube, "respond", "l-run", "yes").returncode == 0
    done = kube.wait_phase("l-run", "Completed", timeout=60)  # a started run goes on without the missing target
    assert done["status"]["output"] == (f"Error: delegation refused: Agent 'helper' does not exist in namespace "
                                        f"'{kube.namespace}'; no child run was created")
    assert list(runs(kube)) == ["l-run", "q-run"]


def test_a_missing_header_secret_fails_the_run_without_holding_a_slot(kube, stack):
    kubectl(stack.kubeconfig, "annotate", "namespace", kube.namespace, "kubechain.dev/max-running=1")
    fetch = {"name": "fetch", "description": "fetch", "execution": {"http": {
        "url": "http://127.0.0.1:9/", "headers": [{"name": "Authorization",
                                                   "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "t"}}}]}}}
    agents(kube, stack, needy=([{"tool_calls": [{"name": "fetch", "arguments": {}}]}, {"content": "fetched"}], [fetch]),
           plain=([{"content": "fine"}], []))
    kube.wait_ready("agent", "needy")
    kube.wait_ready("agent", "plain")
    kube.apply([task("needs", "needy", "go")])
    failed = kube.wait_phase("needs-run", "Failed", timeout=60)
    assert failed["status"]["phaseHistory"][-1]["reason"] == "SecretNotFound"
    assert failed["status"]["error"] == "Secret 'api-token' not found (needed by tool 'fetch')"
    assert failed["status"].get("epoch", 0) == 0 and len(warnings(kube, "needs-run", "SecretNotFound")) == 1
    # Its slot (the namespace allows one) is free: the next run gets it.
    kube.apply([task("after", "plain", "go")])
    assert kube.wait_phase("after-run", "Completed", timeout=60)["status"]["output"] == "fine"


# --- item 6: keys that cannot collide ------------------------------------------------------------------------
def test_a_server_that_reuses_call_ids_gets_each_approval_and_each_child_right(kube, stack):
    same = lambda name, args: {"tool_calls": [{"name": name, "arguments": args, "id": "0"}]}  # noqa: E731
    agents(kube, stack, guarded=([same("calc", {"expression": "6*7"}), same("calc", {"expression": "2*3"}),
                                  {"content": "{last_tool_result}"}], [CALC]))
    kube.wait_ready("agent", "guarded")
    kube.apply([task("two", "guarded", "calculate twice")])
    kube.wait_phase("two-run", "PausedForUserInput")
    assert cli(kube, "approve", "two-run", "--call", "0").returncode == 0
    # The second call "0" waits for its own decision: the first approval is not taken for it.
    again = kube.wait_for("taskrun", "two-run", lambda o: o["status"]["phase"] == "PausedForUserInput"
                          and len(o["status"]["toolCallHistory"]) == 2)
    first, second = again["status"]["toolCallHistory"]
    assert (first["state"], first["result"], second["state"]) == ("Succeeded", "42", "Waiting")
    assert cli(kube, "reject", "two-run", "--reason", "once is enough").returncode == 0
    done = kube.wait_phase("two-run", "Completed", timeout=60)
    assert done["status"]["output"] == "Error: rejected by a human: once is enough"
    assert sorted(done["spec"]["responses"]) == sorted([first["idempotencyKey"], second["idempotencyKey"]])

    agents(kube, stack, boss=([same("ask_a", {"message": "a"}), same("ask_b", {"message": "b"}),
                               {"content": "{last_tool_result}"}], [delegate("ask_a", "alpha"), delegate("ask_b", "beta")]),
           alpha=([{"content": "from alpha"}], []), beta=([{"content": "from beta"}], []))
    kube.wait_ready("agent", "boss")
    kube.apply([task("both", "boss", "ask both")])
    done = kube.wait_phase("both-run", "Completed", timeout=120)
    assert done["status"]["output"] == "from beta"  # not the first child's output again
    children = [r for r in runs(kube).values() if (r["spec"].get("parent") or {}).get("name") == "both-run"]
    assert sorted(r["spec"]["agentRef"]["name"] for r in children) == ["alpha", "beta"]  # one child each, none twice


def test_a_reply_with_duplicate_call_ids_fails_the_run_as_an_llm_error(kube, stack):
    twice = {"tool_calls": [{"name": "calc", "arguments": {"expression": "1"}, "id": "0"},
                            {"name": "calc", "arguments": {"expression": "2"}, "id": "0"}]}
    agents(kube, stack, dup=([twice, {"content": "never"}], [CALC]))
    kube.wait_ready("agent", "dup")
    kube.apply([task("d", "dup", "go")])
    failed = kube.wait_phase("d-run", "Failed", timeout=60)
    assert failed["status"]["phaseHistory"][-1]["reason"] == "LLMError"
    assert failed["status"]["error"] == ("the LLM's reply was refused: tool call ids must be unique within a reply, "
                                         "and '0' (2 times) repeat; the results could not be told apart")
    assert failed["status"].get("toolCallHistory", []) == []  # nothing of it was journaled or run


# --- item 4: http tools --------------------------------------------------------------------------------------
class Recorder:
    """A local HTTP server: `/redirect` answers 302 to `target`, `/big` streams `size` bytes, anything else records
    the request's headers."""

    def __init__(self, target: str = "", size: int = 100_000) -> None:
        self.seen: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/big":
                    self.send_response(200)
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    try:
                        for _ in range(size // 1000):
                            self.wfile.write(b"y" * 1000)
                            self.wfile.flush()
                    except OSError:  # the client read its limit and hung up
                        pass
                    return
                recorder.seen.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()


def test_a_redirecting_http_tool_is_not_followed_and_a_long_body_is_read_whole_to_the_limit(kube, stack):
    metadata = Recorder()  # stands for a metadata address: it must never see the tool's headers
    service = Recorder(target=f"{metadata.url}/latest/meta-data")
    try:
        header = [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}}]
        tools = [{"name": "fetch", "description": "fetch", "execution": {"http": {"url": f"{service.url}/redirect",
                                                                                "headers": header}}},
                 {"name": "big", "description": "big", "execution": {"http": {"url": f"{service.url}/big"}}}]
        agents(kube, stack, web=([{"tool_calls": [{"name": "fetch", "arguments": {}}, {"name": "big", "arguments": {}}]},
                                  {"content": "done"}], tools))
        kube.apply([secret("token", "t", "Bearer hunter2")])
        kube.wait_ready("agent", "web")
        kube.apply([task("w", "web", "go")])
        done = kube.wait_phase("w-run", "Completed", timeout=60)
        fetch, big = sorted(journal(kube, done), key=lambda r: r["tool"] != "fetch")
        assert fetch["state"] == "Failed" and fetch["error"] == (
            f"HTTP 302: redirects are not followed (Location: {metadata.url}/latest/meta-data): the request carries "
            "the tool's headers; set the tool's url to the final address")
        assert metadata.seen == [] and fetch["attempts"] == 1
        assert big["state"] == "Succeeded" and big["result"] == "y" * 65536 + (
            "\n[truncated: the response body was cut at 65536 of 100000 bytes]")
    finally:
        service.close()
        metadata.close()


# --- item 5: limits with defaults and clear refusals ---------------------------------------------------------
def test_200_tool_calls_in_one_reply_run_64_and_the_rest_are_tool_errors(kube, stack):
    many = {"tool_calls": [{"name": "calc", "arguments": {"expression": f"{i}+1"}} for i in range(200)]}
    calc = {"name": "calc", "description": "math", "execution": {"builtin": {"name": "calculator"}}}
    agents(kube, stack, fanout=([many, {"content": "done"}], [calc]))
    kube.wait_ready("agent", "fanout")
    stack.llm.clear_requests()
    kube.apply([task("f", "fanout", "go")])
    done = kube.wait_phase("f-run", "Completed", timeout=120)
    calls = journal(kube, done)
    assert len(calls) == 200 and [c["state"] for c in calls].count("Succeeded") == 64
    assert [c["result"] for c in calls[:64]] == [str(i + 1) for i in range(64)]
    refused = {c["error"] for c in calls[64:]}
    assert refused == {"not run: the reply asked for 200 tool calls and at most 64 run per reply "
                       "(KUBECHAIN_MAX_TOOL_CALLS_PER_REPLY); ask for the rest in a later reply"}
    asked = [r for r in stack.llm.requests() if r["model"] == f"{kube.namespace}-fanout"]
    assert [r["step"] for r in asked] == [0, 1]  # nothing was asked (or run) twice


def test_a_priority_over_the_namespaces_maximum_is_refused(kube, stack):
    agents(kube, stack, a=([{"content": "ok"}], []))
    result = kube.apply([task("vip", "a", "me first", priority=10)], check=False)
    assert result.returncode != 0 and (
        f"spec.priority 10 is over the highest priority namespace '{kube.namespace}' may use, 0 (KUBECHAIN_MAX_PRIORITY"
        in result.stderr)
    run = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "direct"},
           "spec": {"agentRef": {"name": "a"}, "userInput": "me first", "priority": 1}}
    assert "spec.priority 1 is over" in kube.apply([run], check=False).stderr
    assert kube.run("get", "tasks,taskruns", "-o", "name").stdout.strip() == ""  # nothing was stored
    # A cluster admin's annotation on the Namespace raises it there.
    kubectl(stack.kubeconfig, "annotate", "namespace", kube.namespace, "kubechain.dev/max-priority=10")
    wait_until(lambda: kube.apply([task("vip", "a", "me first", priority=10)], check=False).returncode == 0,
               timeout=30, what="the annotation seen by the webhook")
    assert kube.wait_phase("vip-run", "Completed", timeout=60)["spec"]["priority"] == 10
