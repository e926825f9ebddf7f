"""One real stack per test session: kube-apiserver + etcd + controller-manager, a Ray head,
the scripted LLM server and the operator process. Each test works in its own namespace."""
from __future__ import annotations

import itertools
import json
import re
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from harness.localenv import LocalEnvironment, kubectl
from harness.node import LocalNode
from harness.otlp import OTLPReceiver

LLM_KEY = "sk-test-key"
_ns_counter = itertools.count()
CODE_TOOLS_LABEL = "kubechain.dev/code-tools=allowed"
# The code tools the suites run, allowed as a cluster admin would (in the operator's Deployment); each test's
# namespace is opted in by its own test (allow_code_tools), so a namespace nobody opted in refuses them all.
CODE_TOOL_SETTINGS = {
    "KUBECHAIN_RAY_FUNCTIONS": "kubechain.demo.raytools:*",
    "KUBECHAIN_RAY_RUNTIME_ENV_KEYS": "env_vars",
    "KUBECHAIN_MCP_STDIO_COMMANDS": ",".join([
        "mcp-server-time", str(Path(sys.executable).parent / "mcp-server-time"),  # samples/mcp.yaml, test_mcp.py
        shutil.which("node") or "/usr/bin/node",  # server-everything over stdio (test_mcp.py)
        "/nonexistent/mcp-server-time"]),  # the failing server of test_mcp.py: allowed, so it fails to start
    "KUBECHAIN_CODE_TOOLS_ENV": "DEMO_TOKEN,PLAIN,KUBECHAIN_TOOL_*",
}


@pytest.fixture(scope="session")
def otlp():
    """Where the operator and every actor of the session stack send their spans."""
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OTLPReceiver):
    # Under pytest-xdist every worker has a stack of its own (its own ports, Ray head and node): a fixed workdir
    # is per worker too.
    fixed = os.environ.get("KUBECHAIN_TEST_WORKDIR")
    workdir = Path(fixed, os.environ.get("PYTEST_XDIST_WORKER", "")) if fixed else tmp_path_factory.mktemp("stack")
    with LocalEnvironment(workdir, llm_api_key=LLM_KEY, telemetry_env=otlp.env(), operator_env=CODE_TOOL_SETTINGS) as env:
        yield env


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL for the external context store, started the first time a test asks for it."""
    from harness.postgres import LocalPostgres

    with LocalPostgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def node(stack: LocalEnvironment):
    """A real node (containerd + kubelet + scheduler) joined to the session's control plane: started by the first
    test that needs pods to run, stopped at the end of the session. Tests that need none never pay for it."""
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (containerd, runc, the kubelet and CNI do)")
    with LocalNode(stack.controlplane, stack.workdir / "node") as real:
        yield real


class Kube:
    """kubectl in one namespace, with helpers to wait on kubechain objects."""

    def __init__(self, env: LocalEnvironment, namespace: str):
        self.env, self.namespace = env, namespace

    def run(self, *args: str, input: str | None = None, check: bool = True):
        return kubectl(self.env.kubeconfig, "-n", self.namespace, *args, input=input, check=check)

    def apply(self, manifest: str | list[dict[str, Any]], check: bool = True):
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(manifest)
        return self.run("apply", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.run("get", kind, name, "-o", "json").stdout)

    def wait_for(self, kind: str, name: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 60, what: str = "") -> dict[str, Any]:
        deadline, obj = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            result = self.run("get", kind, *([name] if name else []), "-o", "json", check=False)
            if result.returncode == 0:
                obj = json.loads(result.stdout)
                if predicate(obj):
                    return obj
            time.sleep(0.2)
        raise AssertionError(f"{kind}/{name} never became {what or 'as expected'}; last seen: "
                             f"{json.dumps((obj or {}).get('status'), indent=1)[:3000]}\n"
                             f"operator log tail:\n{self.env.operator.log.read_text()[-3000:]}")

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for("taskrun", name, lambda o: (o.get("status") or {}).get("phase") == phase,
                             timeout, what=phase)

    def wait_ended(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        """Completed or Failed, with the operator's conditions: the phase is the actor's write, the conditions the
        operator's, on the event that write causes. A test reading both waits for the second."""
        agrees = {"Completed": "True", "Failed": "False"}[phase]
        return self.wait_for("taskrun", name, lambda o: (status := o.get("status") or {}).get("phase") == phase and any(
            c["type"] == "Succeeded" and c["status"] == agrees for c in status.get("conditions", [])),
            timeout, what=f"{phase}, with the operator's conditions")

    def wait_ready(self, kind: str, name: str, ready: bool = True, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for(kind, name, lambda o: (o.get("status") or {}).get("ready") is ready
                             and (ready or "message" in o["status"]), timeout, what=f"ready={ready}")

    def events(self, name: str) -> list[dict[str, Any]]:
        items = json.loads(self.run("get", "events", "-o", "json").stdout)["items"]
        return [e for e in items if e["involvedObject"]["name"] == name]


@pytest.fixture
def kube(stack: LocalEnvironment, request: pytest.FixtureRequest) -> Kube:
    readable = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().replace("_", "-"))
    namespace = f"t{next(_ns_counter)}-{readable}"[:60].strip("-")
    kubectl(stack.kubeconfig, "create", "namespace", namespace)
    return Kube(stack, namespace)


def allow_code_tools(kube: Kube) -> None:
    """What a cluster admin does to opt a namespace in to ray tools and stdio MCP servers."""
    kubectl(kube.env.kubeconfig, "label", "namespace", kube.namespace, CODE_TOOLS_LABEL, "--overwrite")


def llm(name: str, base_url: str, model: str, secret: str = "llm-key", key: str = "api-key", **extra) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "LLM", "metadata": {"name": name},
            "spec": {"baseURL": base_url, "model": model, "apiKeySecretRef": {"name": secret, "key": key},
                     "maxRetries": 0, **extra}}


def secret(name: str = "llm-key", key: str = "api-key", value: str = LLM_KEY) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}}


def builtin_tool(name: str, builtin: str) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Tool", "metadata": {"name": name},
            "spec": {"description": f"the {builtin} builtin", "execution": {"builtin": {"name": builtin}}}}


def toolset(name: str, refs: list[str] = (), inline: list[dict] = ()) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "ToolSet", "metadata": {"name": name},
            "spec": {"toolRefs": [{"name": r} for r in refs], "tools": list(inline)}}


def agent(name: str, llm_name: str, toolsets: list[str] = (), prompt: str = "You are helpful.") -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
            "spec": {"llmRef": {"name": llm_name}, "systemPrompt": prompt,
                     "toolsetRefs": [{"name": t} for t in toolsets]}}


def task(name: str, agent_name: str, user_input: str, **extra) -> dict:
    return {"apiVersion": "kubechain.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"agentRef": {"name": agent_name}, "userInput": user_input, **extra}}
