"""The external context store (PostgreSQL) against the default (ConfigMaps), on the real kube-apiserver and a real
PostgreSQL: checkpoint time per step at 5 KB vs 5 MB of context with the store (goal: ratio ≤ 1.5), and the bytes
a 5 MB run sends to and keeps in the apiserver (so in etcd) with each.

The actor's own store (actors/checkpoint.py) writes into a real TaskRun, as bench_checkpoint.py does: the base
context step by step (sealed as the layout decides), then SAMPLES steps of one small tool call each, timed.
Printed: the floor (5 KB, default store), the figures, the ratios. No assertion: numbers to read.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys

from kubernetes import client, config
from pydantic import SecretStr

from common import GV, ROOT, quantiles, record, table
from actors.checkpoint import KubeCheckpointStore, KubeREST
from bench_checkpoint import timed_saves
from kubechain.api.runspec import ContextStore, TaskRunRef
from kubechain.api.v1alpha1 import StoreLocation
from harness.controlplane import LocalControlPlane
from harness.localenv import install_crds
from harness.postgres import LocalPostgres

SAMPLES = int(os.environ.get("BENCH_STORE_SAMPLES", "40"))
BIG = int(os.environ.get("BENCH_STORE_BYTES", "5000000"))


class CountingREST(KubeREST):
    """The actor's REST client, counting the bytes of every request body it sends."""

    sent = 0

    async def send(self, method, path, body=None, content_type="application/json"):
        if body is not None:
            self.sent += len(body if isinstance(body, bytes) else json.dumps(body).encode())
        return await super().send(method, path, body, content_type)


async def measure(name: str, base_bytes: int, store: ContextStore | None) -> tuple[list[float], int]:
    """(per-step checkpoint seconds after `base_bytes` of context, bytes sent to the apiserver meanwhile)."""
    body = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskRef": {"name": "none"}}}
    uid = client.CustomObjectsApi().create_namespaced_custom_object(*GV, "default", "taskruns", body)["metadata"]["uid"]
    rest = CountingREST()
    checkpoints = KubeCheckpointStore(TaskRunRef(namespace="default", name=name, uid=uid), epoch=0, rest=rest,
                                      context_store=store)
    times = await timed_saves(checkpoints, base_bytes, SAMPLES)
    await checkpoints.close()
    await rest.close()
    return times, rest.sent


def kept(name: str) -> int:
    """Bytes the run keeps in the apiserver: its TaskRun and its chunk ConfigMaps, as JSON."""
    run = client.CustomObjectsApi().get_namespaced_custom_object(*GV, "default", "taskruns", name)
    maps = client.CoreV1Api().list_namespaced_config_map("default", label_selector=f"kubechain.dev/taskrun={name}")
    api = client.ApiClient()
    return len(json.dumps(run)) + sum(len(json.dumps(api.sanitize_for_serialization(m))) for m in maps.items)


def main() -> int:
    workdir = ROOT / ".work" / "bench-store"
    shutil.rmtree(workdir, ignore_errors=True)
    with LocalControlPlane(workdir) as cp, LocalPostgres(workdir / "postgres") as pg:
        install_crds(cp.kubeconfig)
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        config.load_kube_config(str(cp.kubeconfig))
        store = ContextStore(location=StoreLocation(namespace="default", secret="pg"), dsn=SecretStr(pg.dsn))
        asyncio.run(measure("warm-up", 5_000, store))  # the first writes of a fresh apiserver and database are slow
        floor, _ = asyncio.run(measure("floor", 5_000, None))
        large_default, sent_default = asyncio.run(measure("large-default", BIG, None))
        small, _ = asyncio.run(measure("small", 5_000, store))
        large, sent_store = asyncio.run(measure("large", BIG, store))
        kept_default, kept_store = kept("large-default"), kept("large")
    f, d, s, l = (quantiles(t, 1000) for t in (floor, large_default, small, large))
    result = record("store", {
        "checkpoint_ms_5KB_default": f, "checkpoint_ms_5MB_default": d,
        "checkpoint_ms_5KB_store": s, "checkpoint_ms_5MB_store": l,
        "ratio_p50_store": l["p50"] / s["p50"], "ratio_p50_default": d["p50"] / f["p50"],
        "ratio_p50_store_to_floor": l["p50"] / f["p50"],
        "apiserver_bytes_sent_default": sent_default, "apiserver_bytes_sent_store": sent_store,
        "apiserver_bytes_kept_default": kept_default, "apiserver_bytes_kept_store": kept_store})
    table(result, [("floor: checkpoint per step, 5 KB, ConfigMaps (ms)", "checkpoint_ms_5KB_default", ""),
                   ("checkpoint per step, 5 MB, ConfigMaps (ms)", "checkpoint_ms_5MB_default", ""),
                   ("checkpoint per step, 5 KB, PostgreSQL store (ms)", "checkpoint_ms_5KB_store", ""),
                   ("checkpoint per step, 5 MB, PostgreSQL store (ms)", "checkpoint_ms_5MB_store", "")])
    print(f"{'ratio of p50s, store 5 MB / store 5 KB':<52}{result['ratio_p50_store']:>10.2f}{'':>16}{'≤ 1.5':>10}")
    print(f"{'ratio of p50s, store 5 MB / floor':<52}{result['ratio_p50_store_to_floor']:>10.2f}")
    print(f"{'ratio of p50s, ConfigMaps 5 MB / 5 KB':<52}{result['ratio_p50_default']:>10.2f}")
    mb = BIG / 1e6
    print(f"{f'apiserver bytes sent per {mb:g} MB run, ConfigMaps':<52}{sent_default:>10}")
    print(f"{f'apiserver bytes sent per {mb:g} MB run, PostgreSQL':<52}{sent_store:>10}")
    print(f"{f'apiserver bytes kept per {mb:g} MB run, ConfigMaps':<52}{kept_default:>10}")
    print(f"{f'apiserver bytes kept per {mb:g} MB run, PostgreSQL':<52}{kept_store:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
