"""What kubechain keeps in the apiserver, and for how long: an ended run's sealed chunks dropped after its
contextRetentionSeconds (the run and its tail kept, the transcript saying what went and when), and a namespace's
storage cap failing a long run with StorageQuotaExceeded while another namespace's run completes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from harness.localenv import kubectl
from kubechain.core.storage import CHUNK_OVERHEAD

from .chaos import wait_until
from .conftest import Kube, agent, llm, secret, task
from .test_context import FIRST_ACTOR_SECONDS, note_taker

pytestmark = pytest.mark.integration


def chunk_maps(kube, run: str) -> list[str]:
    listed = kube.run("get", "configmaps", "-l", f"kubechain.dev/taskrun={run}", "-o", "name").stdout.split()
    return sorted(listed)


def cli_transcript(kube, stack, name: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubechain.clients.cli", "transcript", name, "-n", kube.namespace,
                           *flags], env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)},
                          capture_output=True, text=True, check=True)


RETAINED = 15  # long enough to read the whole transcript first on a busy machine


def test_an_ended_runs_chunks_are_dropped_after_its_retention_and_the_transcript_says_so(kube, stack):
    note_taker(kube, stack, "truncate", declared=True)
    kube.apply([task("kept", "scribe", "Write forty notes.", contextRetentionSeconds=RETAINED, ttlSecondsAfterFinished=0)])
    done = kube.wait_phase("kept-run", "Completed", timeout=FIRST_ACTOR_SECONDS)["status"]
    sealed = done["sealedContext"]
    assert sealed["chunks"] >= 2 and not sealed.get("droppedAt") and chunk_maps(kube, "kept-run")
    before = cli_transcript(kube, stack, "kept-run").stdout
    dropped = kube.wait_for("taskrun", "kept-run", lambda o: o["status"]["sealedContext"].get("droppedAt"), 60,
                            "chunks dropped")["status"]
    assert {k: v for k, v in dropped["sealedContext"].items() if k != "droppedAt"} == sealed  # what went, counted
    assert dropped["output"] == "all noted" and dropped["contextWindow"] == done["contextWindow"]  # the run stays
    wait_until(lambda: chunk_maps(kube, "kept-run") == [], 30, "chunk ConfigMaps deleted")
    printed = cli_transcript(kube, stack, "kept-run")
    first = printed.stdout.splitlines()[0]
    assert f"{sealed['messages']} earlier messages" in first and dropped["sealedContext"]["droppedAt"] in first
    assert len(printed.stdout.splitlines()) < len(before.splitlines())
    as_json = cli_transcript(kube, stack, "kept-run", "--json")
    assert "dropped at" in as_json.stderr  # the JSON stays a list of the messages still there
    events = [e for e in kube.events("kept-run") if e["reason"] == "ContextDropped"]
    assert len(events) == 1 and f"contextRetentionSeconds {RETAINED}" in events[0]["message"]
    assert kube.get("taskrun", "kept-run")  # ttlSecondsAfterFinished 0: kept


CAP = 60_000


def test_a_long_run_over_its_namespaces_storage_cap_fails_and_the_next_waits_while_another_namespace_goes_on(
        kube, stack):
    kubectl(stack.kubeconfig, "annotate", "namespace", kube.namespace, f"kubechain.dev/max-stored-bytes={CAP}")
    note_taker(kube, stack, "truncate", declared=True)  # forty 2 KB notes: ~100 KB with the assistant's calls
    other = Kube(stack, f"{kube.namespace[:40]}-roomy")
    kubectl(stack.kubeconfig, "create", "namespace", other.namespace)
    model = f"{other.namespace}-model"
    stack.llm.set_script(model, [{"content": "done"}])
    other.apply([secret(), llm("model", stack.llm.base_url, model), agent("greeter", "model")])
    other.wait_ready("agent", "greeter")
    kube.apply([task("long", "scribe", "Write forty notes.")])
    failed = kube.wait_ended("long-run", "Failed", timeout=FIRST_ACTOR_SECONDS)
    status = failed["status"]
    assert status["phaseHistory"][-1]["reason"] == "StorageQuotaExceeded"
    assert f"over its allowance of {CAP} bytes" in status["error"] \
        and "annotation kubechain.dev/max-stored-bytes" in status["error"]
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", "StorageQuotaExceeded")
    assert any(e["reason"] == "StorageQuotaExceeded" and e["type"] == "Warning" for e in kube.events("long-run"))
    assert 0 < status["step"] < 40  # it got some way: the cap, not a broken start
    held = len(json.dumps(status, separators=(",", ":"))) + sum(
        len(json.loads(kube.run("get", name, "-o", "json").stdout)["data"]["chunk.json"]) + CHUNK_OVERHEAD
        for name in chunk_maps(kube, "long-run"))
    assert held <= CAP  # the refused step was not written, nor any after it

    other.apply([task("short", "greeter", "hi")])
    assert other.wait_phase("short-run", "Completed", timeout=FIRST_ACTOR_SECONDS)["status"]["output"] == "done"
    kube.apply([task("next", "scribe", "Write forty notes.")])
    queued = kube.wait_for("taskrun", "next-run", lambda o: "storage cap" in (o.get("status") or {}).get("message", ""),
                           30, "queued for the storage cap")["status"]
    assert queued.get("phase", "Pending") == "Pending" and f"of {CAP} bytes" in queued["message"]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).read().decode()
    shown = {line.split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
             if line.startswith("kubechain_stored_bytes{")}
    assert 0 < shown[f'kubechain_stored_bytes{{namespace="{kube.namespace}"'] <= CAP + 4096  # the operator's fields
