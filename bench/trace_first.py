"""Where the time from Task creation to the first LLM request goes: the operator's and the actor's spans (OTLP)
of a few Tasks created one at a time, as a timeline relative to the creation.

    .venv/bin/python bench/trace_first.py [RUNS]
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from kubernetes import client, config

from common import NS, ROOT, create, noop_agent, wait_done, wait_ready
from harness.localenv import LocalEnvironment
from harness.otlp import OTLPReceiver

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def main() -> int:
    workdir = ROOT / ".work" / "trace"
    shutil.rmtree(workdir, ignore_errors=True)
    otlp = OTLPReceiver()
    standby = {"KUBECHAIN_STANDBY_ACTORS": os.environ.get("KUBECHAIN_STANDBY_ACTORS", "0")}
    with LocalEnvironment(workdir, telemetry_env=otlp.env(), operator_env=standby) as env:
        config.load_kube_config(str(env.kubeconfig))
        client.CoreV1Api().create_namespace({"metadata": {"name": NS}})
        api = client.CustomObjectsApi()
        noop_agent(api, "first", env.llm.base_url, "trace-first")
        env.llm.set_script("trace-first", [{"content": "done"}])
        wait_ready(api, ["first"])
        for i in range(RUNS):
            text = f"trace-{i} at {time.time()}"
            created = time.time()
            create(api, "tasks", "Task", f"trace-{i}", {"agentRef": {"name": "first"}, "userInput": text})
            wait_done(api, f"trace-{i}-run")
            time.sleep(3)  # the actor's last spans arrive within OTEL_BSP_SCHEDULE_DELAY; tasks come a few s apart
            request = next(r for r in env.llm.requests() if len(r["messages"]) > 1
                           and r["messages"][1].get("content") == text)
            first = request["received_at"] - created
            print(f"\nrun {i}: first LLM request at +{first * 1000:.0f} ms")
            spans = sorted((s for s in otlp.spans if created - 0.05 <= s.start <= request["received_at"] + 0.05
                            and s.name != "LLM.recheck"), key=lambda s: s.start)
            for s in spans:
                print(f"  +{(s.start - created) * 1000:6.0f} ms .. +{(s.end - created) * 1000:6.0f} ms  "
                      f"{s.service:18} {s.name:28} {s.attributes.get('kubechain.name', '')} "
                      f"{s.attributes.get('kubechain.event', '') or ''}")
    otlp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
