"""Tokens and tool calls streamed live to `kubechain follow` (issue 20), on the real stack: the scripted server's
real SSE stream -> the actor's LiveStream -> the operator's stream endpoint (checked with the user's token) -> the
CLI, printed as they arrive; the printed transcript must equal the checkpointed one, also across an actor crash."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from kubechain.api.v1alpha1 import TaskRunStatus
from kubechain.clients.follow import DISCARDED, RESTARTED
from kubechain.clients.transcript import render_message

from .chaos import kill_actor, wait_until
from .conftest import agent, builtin_tool, llm, secret, toolset

pytestmark = pytest.mark.integration
FIRST_ACTOR_SECONDS = 180


def tokens(n: int) -> str:
    return "".join(f"t{i:04d} " for i in range(1, n + 1)).strip()


class CLI:
    """`kubechain` as a user runs it, its stdout read as it comes: each read with the time it arrived."""

    def __init__(self, stack, *args: str):
        env = {**os.environ, "KUBECONFIG": str(stack.kubeconfig), "KUBECHAIN_STREAM_URL": stack.stream_url}
        self.proc = subprocess.Popen([sys.executable, "-m", "kubechain.clients.cli", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.reads: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.reads.append((time.time(), chunk.decode(errors="replace")))

    @property
    def text(self) -> str:
        return "".join(piece for _, piece in list(self.reads))

    def wait(self, timeout: float = 240) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def stderr(self) -> str:
        return self.proc.stderr.read().decode()


def checkpointed(kube, run: str) -> list[str]:
    messages = json.loads(kube.run("get", "taskrun", run, "-o", "json").stdout)  # the tail is the whole here
    status = TaskRunStatus.model_validate(messages.get("status") or {})
    assert status.sealed_context.chunks == 0
    return [render_message(m, full=True) for m in status.context_window]


def printed(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[")]


def setup(kube, stack, steps, model=None) -> str:
    model = model or f"{kube.namespace}-model"
    stack.llm.set_script(model, steps)
    kube.apply([secret(), llm("model", stack.llm.base_url, model), builtin_tool("echo", "echo"),
                toolset("tools", ["echo"]), agent("talker", "model", ["tools"])])
    kube.wait_ready("agent", "talker")
    return model


def test_a_long_answer_streams_to_the_cli_in_pieces_in_order_and_prints_the_checkpointed_transcript(kube, stack):
    answer = tokens(500)
    model = setup(kube, stack, [
        {"content": "Let me echo first.", "tool_calls": [{"name": "echo", "arguments": {"text": "ping"}}],
         "stream_chunk": 3},
        {"content": answer, "stream_chunk": 6, "stream_delay": 0.004}])  # one "tNNNN " per chunk: 500 chunks
    cli = CLI(stack, "run", "talker", "talk to me", "--name", "long", "--follow", "-n", kube.namespace,
              "--timeout", str(FIRST_ACTOR_SECONDS + 120))
    assert cli.wait() == 0, cli.stderr()
    sent = [r for r in stack.llm.requests() if r["model"] == model and r["step"] == 1]
    assert [bool(r["params"].get("stream")) for r in sent] == [True]  # asked with streaming on
    pieces = [(at, piece) for at, piece in cli.reads if "t0" in piece]
    assert len(pieces) > 1  # the answer reached the terminal in more than one piece...
    first_token_printed = next(at for at, piece in pieces if "t0001" in piece)
    assert first_token_printed < sent[0]["chunk_times"][-1]  # ...the first before the server had sent the last
    line = next(line for line in printed(cli.text) if "t0001" in line)
    assert line == f"[assistant] {answer}"  # every token once, in order
    assert printed(cli.text) == checkpointed(kube, "long-run")  # the checkpointed transcript, nothing else
    assert RESTARTED not in cli.text and DISCARDED not in cli.text


def test_killing_the_actor_mid_stream_loses_nothing_and_repeats_nothing(kube, stack):
    answer = tokens(300)
    model = setup(kube, stack, [{"content": answer, "stream_chunk": 6, "stream_delay": 0.02}])  # ~6 s of stream
    kube.apply([{"apiVersion": "kubechain.dev/v1alpha1", "kind": "Task", "metadata": {"name": "crash"},
                 "spec": {"agentRef": {"name": "talker"}, "userInput": "talk to me"}}])
    cli = CLI(stack, "follow", "crash-run", "-n", kube.namespace, "--timeout", str(FIRST_ACTOR_SECONDS + 120))
    wait_until(lambda: "t0060" in cli.text, timeout=FIRST_ACTOR_SECONDS, what="the answer streaming to the CLI")
    run = kube.get("taskrun", "crash-run")
    kill_actor(stack, run["status"]["actor"]["name"])  # mid-answer: the step is not checkpointed
    assert cli.wait() == 0, cli.stderr()
    asked = [r for r in stack.llm.requests() if r["model"] == model]
    assert len(asked) == 2  # the replacement asked the step again, from the checkpoint
    done = kube.get("taskrun", "crash-run")["status"]
    assert done["phase"] == "Completed" and done["epoch"] == 2
    assert printed(cli.text) == checkpointed(kube, "crash-run")
    assert cli.text.count("t0001") == 2 and cli.text.count("t0300") == 2  # the answer line, and the output line
    assert RESTARTED not in cli.text


def test_a_user_who_may_not_get_the_run_gets_403_and_no_stream(kube, stack):
    setup(kube, stack, [{"content": "secret plans", "latency": 1}])
    kube.apply([{"apiVersion": "kubechain.dev/v1alpha1", "kind": "Task", "metadata": {"name": "private"},
                 "spec": {"agentRef": {"name": "talker"}, "userInput": "hi"}}])
    kube.wait_for("taskrun", "private-run", lambda o: bool(o.get("status")), FIRST_ACTOR_SECONDS, "a status")
    url = f"{stack.stream_url}/streams/{kube.namespace}/private-run"

    def get(token: str | None) -> tuple[int, bytes]:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read(200)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    status, body = get(stack.controlplane.restricted_token)  # a user with no right to `get` the run
    assert status == 403 and b"forbidden" in body.lower() and b"secret plans" not in body
    assert get(None)[0] == 401
    assert get("not-a-token")[0] == 401
    status, body = get(stack.controlplane.admin_token)
    assert status == 200 and body.startswith(b"event: run")


def test_a_model_that_refuses_streaming_falls_back_to_whole_messages(kube, stack):
    model = setup(kube, stack, [
        {"tool_calls": [{"name": "echo", "arguments": {"text": "x"}}], "refuse": ["stream"]},
        {"content": "whole answer", "refuse": ["stream"]}])
    cli = CLI(stack, "run", "talker", "hi", "--name", "whole", "--follow", "-n", kube.namespace,
              "--timeout", str(FIRST_ACTOR_SECONDS + 60))
    assert cli.wait() == 0, cli.stderr()
    asked = [bool(r["params"].get("stream")) for r in stack.llm.requests() if r["model"] == model]
    assert asked == [True, False, False]  # refused once, then asked for whole messages for the rest of the run
    assert printed(cli.text) == checkpointed(kube, "whole-run")


def test_a_server_that_ignores_streaming_is_read_whole(kube, stack):
    model = setup(kube, stack, [
        {"tool_calls": [{"name": "echo", "arguments": {"text": "x"}}], "ignore": ["stream"]},
        {"content": "whole answer"}])
    cli = CLI(stack, "run", "talker", "hi", "--name", "ignored", "--follow", "-n", kube.namespace,
              "--timeout", str(FIRST_ACTOR_SECONDS + 60))
    assert cli.wait() == 0, cli.stderr()
    asked = [bool(r["params"].get("stream")) for r in stack.llm.requests() if r["model"] == model]
    assert asked == [True, False]  # its JSON answer read as it came; not asked to stream again
    assert printed(cli.text) == checkpointed(kube, "ignored-run") and "whole answer" in cli.text


def test_a_childs_stream_is_indented_under_its_parent(kube, stack):
    boss, researcher = f"{kube.namespace}-boss", f"{kube.namespace}-researcher"
    stack.llm.set_script(boss, [{"tool_calls": [{"name": "research", "arguments": {"message": "dig"}}]},
                                {"content": "the boss concludes"}])
    stack.llm.set_script(researcher, [{"content": tokens(150), "stream_chunk": 6, "stream_delay": 0.01}])
    kube.apply([secret(), llm("boss", stack.llm.base_url, boss), llm("researcher", stack.llm.base_url, researcher),
                toolset("boss-tools", inline=[{"name": "research", "description": "ask the researcher",
                                               "execution": {"delegate": {"agentRef": {"name": "researcher"}}}}]),
                agent("boss", "boss", ["boss-tools"]), agent("researcher", "researcher")])
    kube.wait_ready("agent", "boss")
    cli = CLI(stack, "run", "boss", "go", "--name", "tree", "--follow", "-n", kube.namespace,
              "--timeout", str(FIRST_ACTOR_SECONDS * 2))
    assert cli.wait() == 0, cli.stderr()
    child = kube.get("taskrun", "tree-run")["status"]["toolCallHistory"][0]["childRun"]
    lines = cli.text.splitlines()
    assert [line for line in lines if line.startswith("[")] == checkpointed(kube, "tree-run")
    assert [line[2:] for line in lines if line.startswith("  [")] == checkpointed(kube, child)
    assert f"  [assistant] {tokens(150)}" in lines
    assert len([piece for _, piece in cli.reads if "t0" in piece]) > 2  # the child's answer streamed in pieces


def test_a_stream_that_breaks_mid_way_is_asked_again_and_its_partial_is_not_shown_twice(kube, stack):
    answer = tokens(200)
    model = setup(kube, stack, [{"content": answer, "stream_chunk": 6, "stream_delay": 0.005,
                                 "stream_break": {"after": 80, "times": 1}}])
    cli = CLI(stack, "run", "talker", "hi", "--name", "broken", "--follow", "-n", kube.namespace,
              "--timeout", str(FIRST_ACTOR_SECONDS + 60))
    assert cli.wait() == 0, cli.stderr()
    asked = [r for r in stack.llm.requests() if r["model"] == model]
    assert [r.get("broken", False) for r in asked] == [True, False]  # the first stream dropped after 80 chunks
    done = kube.get("taskrun", "broken-run")["status"]
    assert done["epoch"] == 1 and "llmRetry" not in done  # retried by the same actor, the episode ended
    assert printed(cli.text) == checkpointed(kube, "broken-run")
    assert cli.text.count("t0050") == 2 and RESTARTED not in cli.text  # the answer line and the output, once each
