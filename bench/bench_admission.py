"""Creates accepted per second with the webhooks on, against the same apiserver with them off (the floor), in one
run, on the deployment's shape: two operator replicas, each answering the webhooks from its own process, one
reconciling every Task created (Task -> TaskRun, which then waits for its Agent: the Tasks name none that exists,
so the reconciler works on every one, re-checking them each second, and no actor is started).

The floor is measured first: the webhook processes stopped and their configurations deleted, BENCH_TASKS Tasks
created by BENCH_CLIENTS threads as fast as they can; then the webhooks started again (they write their
configurations back) and as many Tasks created in another namespace, the operator still reconciling the floor's
runs meanwhile (so our figure is the one measured under more load). Each create with the webhooks on pays two
webhook calls (defaulting and validation).

    .venv/bin/python bench/bench_admission.py      # BENCH_TASKS=300 BENCH_CLIENTS=8
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

from kubernetes import client, config

from common import API, GV, quantiles, record, stack
from harness.localenv import WEBHOOK_PROBE, kubectl

TASKS, CLIENTS = int(os.environ.get("BENCH_TASKS", "300")), int(os.environ.get("BENCH_CLIENTS", "8"))
GOAL = 0.5


def probe_admitted(env) -> bool:
    """Whether the apiserver lets an invalid Tool through (a dry run): no validating webhook is called."""
    result = kubectl(env.kubeconfig, "create", "--dry-run=server", "-f", "-", input=json.dumps(WEBHOOK_PROBE),
                     check=False)
    return result.returncode == 0


def creates(kubeconfig: str, namespace: str, agent: str) -> tuple[float, list[float]]:
    """(Tasks accepted per second, each create's seconds): TASKS creates shared by CLIENTS threads."""
    client.CoreV1Api().create_namespace({"metadata": {"name": namespace}})
    latencies: list[float] = []
    names = iter(range(TASKS))
    lock = threading.Lock()

    def work() -> None:
        api = client.CustomObjectsApi(config.new_client_from_config(kubeconfig))
        while True:
            with lock:
                i = next(names, None)
            if i is None:
                return
            body = {"apiVersion": API, "kind": "Task", "metadata": {"name": f"t{i}"},
                    "spec": {"agentRef": {"name": agent}, "userInput": f"task {i}"}}
            t0 = time.perf_counter()
            api.create_namespaced_custom_object(*GV, namespace, "tasks", body)
            latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work) for _ in range(CLIENTS)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return TASKS / (time.perf_counter() - t0), latencies


def main() -> int:
    with stack("admission", replicas=2) as (env, api):
        for replica in env.operators:  # the floor: no webhook called
            replica.webhooks.stop()
        api_ext = client.AdmissionregistrationV1Api()
        api_ext.delete_validating_webhook_configuration("kubechain.dev")
        api_ext.delete_mutating_webhook_configuration("kubechain.dev")
        while not probe_admitted(env):
            time.sleep(0.2)
        kubeconfig = str(env.kubeconfig)
        off, off_latencies = creates(kubeconfig, "bench-off", "nobody")
        for replica in env.operators:
            replica.webhooks.start()
        while probe_admitted(env):
            time.sleep(0.2)
        on, on_latencies = creates(kubeconfig, "bench-on", "nobody")
    result = record("admission", {"tasks": TASKS, "clients": CLIENTS, "floor_creates_per_s": off,
                                  "creates_per_s": on, "ratio": on / off,
                                  "create_seconds_off": quantiles(off_latencies),
                                  "create_seconds_on": quantiles(on_latencies)})
    print(f"\nkubechain bench admission — {result['date']} — {result['machine']}")
    print(f"{TASKS} Tasks, {CLIENTS} client threads, 2 replicas")
    print(f"{'metric':<52}{'floor':>10}{'ours':>10}{'ratio':>8}{'goal':>8}")
    print(f"{'Tasks created per second (webhooks off | on)':<52}{off:>10.1f}{on:>10.1f}{on / off:>8.2f}{'≥ 0.5':>8}")
    for label, key_off, key_on in (("create p50 (s)", "p50", "p50"), ("create p90 (s)", "p90", "p90")):
        print(f"{label:<52}{result['create_seconds_off'][key_off]:>10.3f}{result['create_seconds_on'][key_on]:>10.3f}")
    return 0 if on / off >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
