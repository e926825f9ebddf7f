"""`kubechain follow R` (and `run --follow`): print a run's conversation as it happens.

The checkpointed transcript is the source of truth; the live stream (kubechain/clients/livefeed.py) is a preview of
the open step. So:
1. Every poll (POLL_SECONDS) reads the run; messages not printed yet are printed in order, read back from the sealed
   chunks when they were sealed between two polls: nothing checkpointed is skipped.
2. The open step's answer is printed as it streams, once everything before it is printed (the previous step's
   tool results come first). Its checkpointed message then prints only what the stream had not shown
   (kubechain/core/livestream.py `advance`): nothing twice, whether the stream got all of it, part (a crash, a
   dropped connection), or none (a server that does not stream).
3. A replacement actor (after a crash) asks the step again and streams it from the start: what it repeats is not
   printed again. Only a different answer (a broken attempt's partial, then another) is printed whole after a
   line that says so.
4. A run that delegates: each child run is followed too, its lines indented under its parent's.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, TextIO

from kubechain.api.v1alpha1 import CallState, Message, TaskRunStatus, WaitingFor
from kubechain.core.livestream import advance, preview

from .transcript import render_message

POLL_SECONDS = 0.3
ASSISTANT = "[assistant] "
RESTARTED = "── the stream broke and the step was asked again; its answer: ──"
DISCARDED = "── the streamed answer above was not kept ──"


class Printer:
    """Writes from every followed run (threads) to one terminal: whole writes, each run's lines indented; a run that
    writes while another's line is open ends that line first (it continues on a new line, marked `…`)."""

    def __init__(self, out: TextIO = sys.stdout):
        self.out, self.lock = out, threading.RLock()
        self._owner: object | None = None  # whose line is open
        self._broken: set[int] = set()

    def write(self, who: object, indent: str, text: str) -> None:
        with self.lock:
            if self._owner is not None and self._owner is not who:
                self.out.write("\n")
                self._broken.add(id(self._owner))
                self._owner = None
            if self._owner is None and text:
                self.out.write(indent + ("… " if id(who) in self._broken else ""))
                self._broken.discard(id(who))
            body = text[:-1] if text.endswith("\n") else text
            self.out.write(body.replace("\n", "\n" + indent) + ("\n" if text.endswith("\n") else ""))
            self._owner = None if text.endswith("\n") else (who if text else self._owner)
            self.out.flush()


class Follower:
    def __init__(self, read: Callable[[], dict | None], complete: Callable[[dict], list[Message]], printer: Printer,
                 indent: str = "", child: Callable[[str, str], "Follower"] | None = None):
        """`read`: the run's object (None before it exists); `complete`: its whole conversation (sealed chunks
        read back); `child`: a Follower for a child run's name, at an indent."""
        self.read, self.complete, self.printer, self.indent, self.child = read, complete, printer, indent, child
        self.printed = 0  # messages of the conversation printed
        self.shown = ""  # of the open assistant message (its preview, then its checkpoint)
        self.status: TaskRunStatus | None = None
        self.phase = ""
        self.children: dict[str, threading.Thread] = {}
        self._live: tuple[int, str, int] | None = None  # (step, source, attempt) of the deltas below
        self._deltas: list[dict[str, Any]] = []
        self._head: list[dict[str, Any]] = []  # the first messages, streamed before any checkpoint holds them

    # -- the live stream (another thread) -------------------------------------------------------------------------
    def on_batch(self, batch: dict[str, Any]) -> None:
        with self.printer.lock:
            key = (batch["step"], batch["source"], batch["attempt"])
            if key != self._live or batch["offset"] == 0:
                self._live, self._deltas = key, []
            self._deltas += [d for d in batch["deltas"] if "u" not in d]
            self._head = batch.get("head") or self._head
            self._show_live()

    def _show_live(self) -> None:
        status = self.status
        if self._live is None or status is None or self._live[0] != status.step + 1:
            return  # not the open step (yet, or any more)
        if any(not r.state.finished for r in status.tool_call_history) or not status.phase.value == "Running":
            return  # the previous step's results are not printed yet
        if self.printed == 0 and self._head:  # the run's first step: its system prompt and input come first
            for message in TaskRunStatus.model_validate({"contextWindow": self._head}).context_window:
                self._print(message)
            self.printed = len(self._head)
        if self.printed == 0 and status.step == 0:
            return  # the head is not known yet: wait for it (or for the checkpoint)
        self._show(preview(self._deltas))

    def _show(self, target: str) -> None:
        step = advance(self.shown, target)
        if step.restart:
            self.printer.write(self, self.indent, "\n" + RESTARTED + "\n")
            self.shown = ""
        if step.text:
            self.printer.write(self, self.indent, ("" if self.shown else ASSISTANT) + step.text)
            self.shown += step.text

    # -- the checkpoints --------------------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Print what the run checkpointed since the last poll; True once it has ended."""
        obj = self.read()
        if obj is None:
            return False
        status = TaskRunStatus.model_validate(obj.get("status") or {})
        first = status.sealed_context.messages
        with self.printer.lock:
            if first > self.printed and not status.sealed_context.dropped_at:
                messages = self.complete(obj)[self.printed:]  # sealed since the last poll: read them back
            else:
                messages = status.context_window[max(0, self.printed - first):]
            for message in messages:
                self._print(message)
            self.printed += len(messages)
            self.status = status
            if status.phase.value != self.phase and not self.shown:
                self.phase = status.phase.value
                self.printer.write(self, self.indent, f"-- {self.phase}: {status.message}\n")
            self._follow_children(status)
            self._show_live()
        return status.phase.terminal

    def _print(self, message: Message) -> None:
        line = render_message(message, full=True)
        if message.role == "assistant":
            self._show(line.removeprefix(ASSISTANT))
            self.printer.write(self, self.indent, ("" if self.shown else ASSISTANT) + "\n")
            self.shown = ""
            return
        if self.shown:  # a streamed answer the run did not keep (it failed, and the run went another way)
            self.printer.write(self, self.indent, "\n" + DISCARDED + "\n")
            self.shown = ""
        self.printer.write(self, self.indent, line + "\n")

    def _follow_children(self, status: TaskRunStatus) -> None:
        for record in status.tool_call_history:
            name = record.child_run
            if (self.child is None or not name or record.waiting_for is not WaitingFor.CHILD_RUN
                    or name in self.children or record.state not in (CallState.WAITING,)):
                continue
            follower = self.child(name, self.indent + "  ")
            thread = threading.Thread(target=follower.run_until_done, name=f"follow-{name}", daemon=True)
            self.children[name] = thread
            thread.start()

    def run_until_done(self, deadline: float = float("inf")) -> TaskRunStatus | None:
        while time.monotonic() < deadline:
            try:
                if self.poll():
                    break
            except Exception as exc:  # the apiserver away for a moment: try again
                self.printer.write(self, self.indent, f"-- (cannot read the run: {exc})\n")
            time.sleep(POLL_SECONDS)
        else:
            return None
        for thread in self.children.values():
            thread.join(timeout=5)
        return self.status


def follow(namespace: str, name: str, timeout: float, stream_url: str | None, out: TextIO = sys.stdout) -> int:
    """Follow run `name` (and its children) until it ends: 0 Completed, 1 Failed, 2 timed out. With `stream_url` (the
    operator's streams, KUBECHAIN_STREAM_URL) and a bearer token in the kubeconfig, the open step streams live."""
    from kubernetes import client, config

    from kubechain.api.v1alpha1 import GROUP, VERSION

    from . import transcript
    from .livefeed import LiveFeed, kubeconfig_token

    config.load_config()
    api = client.CustomObjectsApi()
    token = kubeconfig_token() if stream_url else None
    if stream_url and not token:
        print("the kubeconfig's user has no bearer token, which the live stream is read with: following the run "
              "step by step from its checkpoints", file=sys.stderr, flush=True)
    printer, feeds = Printer(out), []

    def reader(run: str) -> Callable[[], dict | None]:
        def read() -> dict | None:
            try:
                return api.get_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", run)
            except client.exceptions.ApiException as exc:
                if exc.status == 404:
                    return None  # not created yet
                raise
        return read

    def make(run: str, indent: str) -> Follower:
        follower = Follower(reader(run), lambda obj: transcript.complete(obj)[1], printer, indent, make)
        if stream_url and token:
            feeds.append(LiveFeed(stream_url, namespace, run, token, follower.on_batch).start())
        return follower

    root = make(name, "")
    try:
        status = root.run_until_done(time.monotonic() + timeout)
    finally:
        for feed in feeds:
            feed.stop()
    if status is None:
        print("timed out following the run", file=sys.stderr)
        return 2
    printer.write(root, "", (status.output if status.output is not None else f"error: {status.error}") + "\n")
    return 0 if status.phase.value == "Completed" else 1
