"""KUBECHAIN_MAX_ACTOR_STARTS on the real stack: no more actor processes start at once than it allows, the runs
beyond it wait in the actor line, and each one that waits says why in its status while it does."""
from __future__ import annotations

import json
import threading
import time

import pytest

from kubechain.api.v1alpha1.common import parse_rfc3339
from kubechain.core.actorline import WAITING

from .chaos import actors
from .conftest import task
from .test_human_input import ASK, helpdesk

pytestmark = pytest.mark.integration
RUNS = 5
PATIENCE = 2.0  # controllers/taskrun/effects.py LINE_PATIENCE_SECONDS: a wait shorter than this need not be said


class Watch:
    """Samples, until stopped: how many of the namespace's actors Ray is still creating (not ALIVE yet), and every
    status.message each run showed."""

    def __init__(self, kube, stack):
        self.kube, self.stack, self.done = kube, stack, threading.Event()
        self.most_starting, self.samples = 0, 0
        self.messages: dict[str, set[str]] = {}
        self.threads = [threading.Thread(target=self._actors, daemon=True),
                        threading.Thread(target=self._runs, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _actors(self) -> None:
        while not self.done.is_set():
            ours = [a for a in actors(self.stack) if a.get("name", "").startswith(f"{self.kube.namespace}/")]
            starting = [a for a in ours if a["state"] in ("DEPENDENCIES_UNREADY", "PENDING_CREATION")]
            self.most_starting, self.samples = max(self.most_starting, len(starting)), self.samples + 1
            time.sleep(0.02)

    def _runs(self) -> None:
        while not self.done.is_set():
            result = self.kube.run("get", "taskruns", "-o", "json", check=False)
            for run in json.loads(result.stdout or '{"items": []}')["items"] if result.returncode == 0 else []:
                message = (run.get("status") or {}).get("message")
                self.messages.setdefault(run["metadata"]["name"], set()).add(message or "")
            time.sleep(0.1)

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=30)


def waited(kube, name: str) -> float:
    """Seconds from the run's Running transition to its actor's start (its ActorStarted Event)."""
    run = kube.get("taskrun", name)
    running = next(p for p in run["status"]["phaseHistory"] if p["phase"] == "Running")
    [started] = [e for e in kube.events(name) if e["reason"] == "ActorStarted"]
    at = started.get("eventTime") or started.get("firstTimestamp") or started["lastTimestamp"]
    return (parse_rfc3339(at) - parse_rfc3339(running["time"])).total_seconds()


def test_no_more_actor_processes_start_at_once_than_allowed_and_the_runs_beyond_say_why_they_wait(kube, stack):
    stack.operator.reconfigure(KUBECHAIN_MAX_ACTOR_STARTS="1")  # no pool: each run starts a process of its own
    try:
        helpdesk(kube, stack, [{"content": "done", "latency": 5}], [ASK], name="starts")
        watch = Watch(kube, stack)
        try:
            kube.apply([task(f"s{i}", "starts", f"run {i}") for i in range(RUNS)])  # all at once
            for i in range(RUNS):
                kube.wait_phase(f"s{i}-run", "Completed", timeout=180)
        finally:
            watch.stop()
        assert watch.samples > 20 and watch.most_starting == 1  # one at a time (and one was seen starting)
        said = {name for name, seen in watch.messages.items() if any(m.startswith(WAITING) for m in seen)}
        # One start at a time and a process start each: the last runs waited several starts, and said so.
        assert said, f"no run said it waited for an actor: {watch.messages}"
        assert all(m.startswith(f"{WAITING}: 1 actor process(es) are starting") for n in said
                   for m in watch.messages[n] if m.startswith(WAITING))
        for i in range(RUNS):  # nothing waited longer than a moment without saying why (3 s: the write's own time)
            name = f"s{i}-run"
            assert name in said or waited(kube, name) <= PATIENCE + 3, (name, waited(kube, name), watch.messages[name])
            assert not kube.get("taskrun", name)["status"]["message"].startswith(WAITING)  # not any more
            queued = [e for e in kube.events(name) if e["reason"] == "ActorQueued"]
            assert len(queued) == (1 if name in said else 0), (name, queued)  # an Event with the message, once
    finally:
        stack.operator.reconfigure(KUBECHAIN_MAX_ACTOR_STARTS=None)
