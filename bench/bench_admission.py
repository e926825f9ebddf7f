"""Creates accepted per second with the webhooks on, against the same apiserver with them off (the floor), in one
run, on the deployment's shape: two operator replicas, each answering the webhooks from its own process, one
reconciling every Task created (Task -> TaskRun, which then waits for its Agent: the Tasks name none that exists,
so the reconciler works on every one, re-checking them each second, and no actor is started).

BENCH_TASKS Tasks each way, created by BENCH_CLIENTS threads as fast as they can, in rounds off/on/on/off (the
reconciler's load grows with every round's Tasks: this order gives both the same on average), each round begun
once the reconciler has caught up with the one before. Off: the webhook
processes stopped and their configurations deleted; on: started again (they write their configurations back).
Each create with the webhooks on pays two webhook calls (defaulting and validation), through the harness's proxy
(the Service's stand-in) to either replica.

    .venv/bin/python bench/bench_admission.py      # BENCH_TASKS=300 BENCH_CLIENTS=8
"""
from __future__ import annotations

import json
import os
import sys
import time

from kubernetes import client

from common import GV, create_tasks, quantiles, record, stack
from harness.controlplane import http_get
from harness.localenv import WEBHOOK_PROBE, kubectl

TASKS, CLIENTS = int(os.environ.get("BENCH_TASKS", "300")), int(os.environ.get("BENCH_CLIENTS", "8"))
GOAL = 0.5


def probe_admitted(env) -> bool:
    """Whether the apiserver lets an invalid Tool through (a dry run): no validating webhook is called."""
    result = kubectl(env.kubeconfig, "create", "--dry-run=server", "-f", "-", input=json.dumps(WEBHOOK_PROBE),
                     check=False)
    return result.returncode == 0


def creates(kubeconfig: str, namespace: str, agent: str, count: int) -> tuple[float, list[float]]:
    """(seconds taken, each create's seconds): `count` creates in a new namespace, shared by CLIENTS threads."""
    client.CoreV1Api().create_namespace({"metadata": {"name": namespace}})
    return create_tasks(kubeconfig, namespace, agent, count, CLIENTS)


def webhooks(env, on: bool) -> None:
    """Start the replicas' webhook processes (they write their configurations), or stop them and delete those."""
    for replica in env.operators:
        replica.webhooks.start() if on else replica.webhooks.stop()
    if not on:
        api = client.AdmissionregistrationV1Api()
        api.delete_validating_webhook_configuration("kubechain.dev")
        api.delete_mutating_webhook_configuration("kubechain.dev")
    while probe_admitted(env) is on:
        time.sleep(0.2)


def answered(env) -> int:
    """Reviews the replicas' webhook processes answered since they started (their /healthz)."""
    total = 0
    for replica in env.operators:
        if replica.webhooks.proc is not None:
            body = http_get(f"https://127.0.0.1:{replica.webhook_port}/healthz")[1]
            total += sum(json.loads(body)["answered"].values())
    return total


def settle(api: client.CustomObjectsApi, namespace: str, count: int, timeout: float = 300) -> None:
    """Until the reconciler has caught up with a round: each of its Tasks has a TaskRun that shows its status.
    Every round then starts from the same quiet operator, and competes with its reaction to that round alone."""
    deadline = time.monotonic() + timeout
    while sum(bool(r.get("status")) for r in api.list_namespaced_custom_object(*GV, namespace, "taskruns")["items"]) < count:
        assert time.monotonic() < deadline, f"the reconciler did not catch up with {namespace}"
        time.sleep(0.5)


def main() -> int:
    rounds = ("off", "on", "on", "off")  # ABBA: the reconciler's load grows with every round's Tasks
    taken = {"off": 0.0, "on": 0.0}
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    calls = 0
    # The Tasks' runs wait for an Agent that never comes: re-checked each minute, not each second as in the tests
    with stack("admission", operator_env={"KUBECHAIN_PENDING_RETRY_SECONDS": "60"}, replicas=2) as (env, api):
        for i, mode in enumerate(rounds):
            if i == 0 or mode != rounds[i - 1]:
                webhooks(env, mode == "on")
            before = answered(env)
            namespace = f"bench-{i}-{mode}"
            seconds, each = creates(str(env.kubeconfig), namespace, "nobody", TASKS // 2)
            taken[mode] += seconds
            latencies[mode] += each
            if mode == "on":
                calls += answered(env) - before
            print(f"round {i} ({mode}): {TASKS // 2 / seconds:.1f} creates/s", flush=True)
            settle(api, namespace, TASKS // 2)
    off, on = TASKS / taken["off"], TASKS / taken["on"]
    result = record("admission", {"tasks": TASKS, "clients": CLIENTS, "floor_creates_per_s": off,
                                  "creates_per_s": on, "ratio": on / off,
                                  "create_seconds_off": quantiles(latencies["off"]),
                                  "create_seconds_on": quantiles(latencies["on"]),
                                  "webhook_calls_per_create": calls / TASKS})
    print(f"\nkubechain bench admission — {result['date']} — {result['machine']}")
    print(f"{TASKS} Tasks each way in rounds {'/'.join(rounds)}, {CLIENTS} client threads, 2 replicas")
    print(f"{'metric':<52}{'floor':>10}{'ours':>10}{'ratio':>8}{'goal':>8}")
    print(f"{'Tasks created per second (webhooks off | on)':<52}{off:>10.1f}{on:>10.1f}{on / off:>8.2f}{'≥ 0.5':>8}")
    for label, key in (("create p50 (s)", "p50"), ("create p90 (s)", "p90")):
        print(f"{label:<52}{result['create_seconds_off'][key]:>10.3f}{result['create_seconds_on'][key]:>10.3f}")
    print(f"webhook calls per Task created, while creating (the operator's own writes included): "
          f"{calls / TASKS:.1f}")
    return 0 if on / off >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
