"""What kubechain keeps in the apiserver, and for how long: an ended run's sealed chunks dropped after its
contextRetentionSeconds (the run and its tail kept, the transcript saying what went and when), and a namespace's
storage cap failing a long run with StorageQuotaExceeded while another namespace's run completes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import task
from .test_context import FIRST_ACTOR_SECONDS, note_taker

pytestmark = pytest.mark.integration


def chunk_maps(kube, run: str) -> list[str]:
    listed = kube.run("get", "configmaps", "-l", f"kubechain.dev/taskrun={run}", "-o", "name").stdout.split()
    return sorted(listed)


def cli_transcript(kube, stack, name: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubechain.clients.cli", "transcript", name, "-n", kube.namespace,
                           *flags], env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)},
                          capture_output=True, text=True, check=True)


def test_an_ended_runs_chunks_are_dropped_after_its_retention_and_the_transcript_says_so(kube, stack):
    note_taker(kube, stack, "truncate", declared=True)
    kube.apply([task("kept", "scribe", "Write forty notes.", contextRetentionSeconds=3, ttlSecondsAfterFinished=0)])
    done = kube.wait_phase("kept-run", "Completed", timeout=FIRST_ACTOR_SECONDS)["status"]
    sealed = done["sealedContext"]
    assert sealed["chunks"] >= 2 and not sealed.get("droppedAt") and chunk_maps(kube, "kept-run")
    before = cli_transcript(kube, stack, "kept-run").stdout
    dropped = kube.wait_for("taskrun", "kept-run", lambda o: o["status"]["sealedContext"].get("droppedAt"), 30,
                            "chunks dropped")["status"]
    assert {k: v for k, v in dropped["sealedContext"].items() if k != "droppedAt"} == sealed  # what went, counted
    assert dropped["output"] == "all noted" and dropped["contextWindow"] == done["contextWindow"]  # the run stays
    assert chunk_maps(kube, "kept-run") == []
    printed = cli_transcript(kube, stack, "kept-run")
    first = printed.stdout.splitlines()[0]
    assert f"{sealed['messages']} earlier messages" in first and dropped["sealedContext"]["droppedAt"] in first
    assert len(printed.stdout.splitlines()) < len(before.splitlines())
    as_json = cli_transcript(kube, stack, "kept-run", "--json")
    assert "dropped at" in as_json.stderr  # the JSON stays a list of the messages still there
    events = [e for e in kube.events("kept-run") if e["reason"] == "ContextDropped"]
    assert len(events) == 1 and "contextRetentionSeconds 3" in events[0]["message"]
    assert kube.get("taskrun", "kept-run")  # ttlSecondsAfterFinished 0: kept
