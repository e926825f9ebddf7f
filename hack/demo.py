"""`make demo`: a real control plane, Ray head, LLM and operator; apply samples/demo.yaml; watch the agent work.

With OPENAI_API_KEY set, the same agent talks to OpenAI (model $OPENAI_MODEL, default gpt-4o-mini;
OPENAI_BASE_URL for any compatible server) instead of the scripted LLM server.
Pass --keep to leave everything running and explore with kubectl and the Ray dashboard.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import yaml

from harness.localenv import LocalEnvironment, kubectl

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / ".work" / "demo"


def manifests(env: LocalEnvironment) -> str:
    docs = list(yaml.safe_load_all((ROOT / "samples" / "demo.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "LLM":
            doc["spec"]["baseURL"] = os.environ.get("OPENAI_BASE_URL", env.llm.base_url)
            if os.environ.get("OPENAI_API_KEY"):
                doc["spec"]["model"] = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
                if "OPENAI_BASE_URL" not in os.environ:
                    del doc["spec"]["baseURL"]
        if doc["kind"] == "Secret" and os.environ.get("OPENAI_API_KEY"):
            doc["stringData"]["api-key"] = os.environ["OPENAI_API_KEY"]
    return yaml.safe_dump_all(docs)


def show_transcript(status: dict) -> None:
    print("\n--- transcript (TaskRun.status.contextWindow) ---")
    for message in status.get("contextWindow", []):
        text = message.get("content") or ""
        for call in message.get("tool_calls") or []:
            text += f"→ call {call['function']['name']}({call['function']['arguments']})"
        print(textwrap.fill(f"[{message['role']}] {text}", width=100, subsequent_indent="    "))
    usage = status.get("usage", {})
    print(f"--- {status.get('phase')} in {status.get('step')} steps, {usage.get('totalTokens')} tokens; "
          f"output: {status.get('output') or status.get('error')}")


def main() -> int:
    keep = "--keep" in sys.argv
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    print("starting kube-apiserver + etcd + controller-manager, a Ray head, the scripted LLM and the operator ...")
    started = time.monotonic()
    env = LocalEnvironment(WORKDIR, llm_api_key=None if os.environ.get("OPENAI_API_KEY") else "demo-key").start()
    try:
        print(f"ready in {time.monotonic() - started:.1f} s  (Ray dashboard: {env.ray.dashboard_url})\n")
        print(kubectl(env.kubeconfig, "apply", "-f", "-", input=manifests(env)).stdout)
        deadline, phase = time.monotonic() + 120, ""
        while time.monotonic() < deadline and phase not in ("Completed", "Failed"):
            time.sleep(0.5)
            run = kubectl(env.kubeconfig, "get", "taskrun", "what-is-run", "-o", "json", check=False)
            phase = json.loads(run.stdout).get("status", {}).get("phase", "") if run.returncode == 0 else ""
        print(kubectl(env.kubeconfig, "get", "kubechain").stdout)
        show_transcript(json.loads(run.stdout)["status"])
        print("\n--- events ---\n" + kubectl(env.kubeconfig, "get", "events", "--sort-by=.lastTimestamp").stdout)
        if keep:
            print(f"Everything keeps running. In another shell:\n  export KUBECONFIG={env.kubeconfig}\n"
                  f"  kubectl get kubechain\nRay dashboard token: {env.ray.token}\nCtrl-C stops it all.")
            while True:
                time.sleep(3600)
        return 0 if phase == "Completed" else 1
    except KeyboardInterrupt:
        return 0
    finally:
        env.stop()


if __name__ == "__main__":
    sys.exit(main())
