"""`kubechain follow`'s printer with fakes: checkpoints (the source of truth) and the live stream's batches, in the
orders they can arrive in; what it prints must be the checkpointed transcript, nothing lost, nothing twice."""
from __future__ import annotations

import io

from kubechain.api.v1alpha1 import TaskRunStatus
from kubechain.clients.follow import RESTARTED, Follower, Printer
from kubechain.clients.transcript import render_message

SYSTEM, USER = {"role": "system", "content": "s"}, {"role": "user", "content": "hi"}


def run(step, messages, phase="Running", calls=(), sealed=0):
    return {"metadata": {"name": "r", "namespace": "n", "uid": "u"}, "status": {
        "phase": phase, "step": step, "contextWindow": messages, "toolCallHistory": list(calls),
        "sealedContext": {"messages": sealed, "chunks": 1 if sealed else 0}}}


class Fake:
    def __init__(self):
        self.obj, self.out, self.completed = None, io.StringIO(), []
        self.follower = Follower(lambda: self.obj, self.complete, Printer(self.out))
        self.whole: list = []

    def complete(self, obj):
        self.completed.append(obj)
        return [TaskRunStatus.model_validate({"contextWindow": self.whole}).context_window[i]
                for i in range(len(self.whole))]

    def poll(self, obj):
        self.obj = obj
        return self.follower.poll()

    def batch(self, step, source, attempt, offset, *texts):
        self.follower.on_batch({"step": step, "source": source, "attempt": attempt, "offset": offset,
                                "deltas": [{"c": t} for t in texts]})

    def lines(self):
        return [line for line in self.out.getvalue().splitlines() if line.startswith("[")]


def transcript(messages):
    return [render_message(m, full=True) for m in TaskRunStatus.model_validate({"contextWindow": messages}).context_window]


ANSWER = {"role": "assistant", "content": "Hello world"}


def test_the_answer_streams_then_its_checkpoint_prints_nothing_twice():
    fake = Fake()
    fake.poll(run(0, [SYSTEM, USER]))
    fake.batch(1, "a", 1, 0, "Hel", "lo ")
    assert fake.out.getvalue().endswith("[assistant] Hello ")  # printed before any checkpoint
    fake.batch(1, "a", 1, 2, "wor")
    assert fake.poll(run(1, [SYSTEM, USER, ANSWER], phase="Completed"))
    fake.batch(1, "a", 1, 3, "ld")  # late: the step is checkpointed, nothing more
    assert fake.lines() == transcript([SYSTEM, USER, ANSWER])
    assert fake.out.getvalue().count("Hello") == 1


def test_a_replacement_actor_repeating_the_step_shows_nothing_twice():
    fake = Fake()
    fake.poll(run(0, [SYSTEM, USER]))
    fake.batch(1, "first-actor", 1, 0, "Hello ", "wo")  # then the actor is killed
    fake.batch(1, "second-actor", 1, 0, "Hel")  # its replacement asks again from the checkpoint
    fake.batch(1, "second-actor", 1, 1, "lo ", "world")
    fake.poll(run(1, [SYSTEM, USER, ANSWER], phase="Completed"))
    assert fake.lines() == transcript([SYSTEM, USER, ANSWER])
    assert RESTARTED not in fake.out.getvalue()


def test_a_different_answer_after_a_broken_stream_is_printed_whole_after_a_notice():
    fake = Fake()
    fake.poll(run(0, [SYSTEM, USER]))
    fake.batch(1, "a", 1, 0, "Hola")
    fake.batch(1, "a", 2, 0, "Hello")
    fake.poll(run(1, [SYSTEM, USER, ANSWER], phase="Completed"))
    text = fake.out.getvalue()
    assert RESTARTED in text and text.split(RESTARTED)[1].strip().startswith("[assistant] Hello world")


def test_the_next_steps_stream_waits_for_the_previous_steps_results():
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "echo", "arguments": "{}"}}]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "ok"}
    started = {"id": "c1", "step": 1, "tool": "echo", "arguments": "{}", "idempotencyKey": "u/1/c1", "state": "Started"}
    fake = Fake()
    fake.poll(run(1, [SYSTEM, USER, call], calls=[started]))  # the write-ahead record: the call runs
    fake.batch(2, "a", 1, 0, "Hello")  # the next step streams before the poll sees the results
    assert "Hello" not in fake.out.getvalue()
    fake.poll(run(1, [SYSTEM, USER, call, result], calls=[{**started, "state": "Succeeded", "result": "ok"}]))
    assert fake.out.getvalue().rstrip().endswith("[tool] ok\n[assistant] Hello".replace("\n", "\n"))
    fake.poll(run(2, [SYSTEM, USER, call, result, ANSWER], phase="Completed"))
    assert fake.lines() == transcript([SYSTEM, USER, call, result, ANSWER])


def test_messages_sealed_between_two_polls_are_read_back_not_skipped():
    fake = Fake()
    fake.poll(run(0, [SYSTEM, USER]))
    more = [{"role": "assistant", "content": f"a{i}"} for i in range(3)]
    fake.whole = [SYSTEM, USER, *more]
    fake.poll(run(3, [more[2]], sealed=4))  # four messages sealed since: two were never seen in a status
    assert fake.completed and fake.lines() == transcript([SYSTEM, USER, *more])


def test_a_child_runs_lines_are_indented_under_its_parent():
    printer, out = Printer(io.StringIO()), None
    parent, child = object(), object()
    printer.write(parent, "", "[assistant] delegating")
    printer.write(child, "  ", "[user] sub\n")
    printer.write(parent, "", " more\n")
    assert printer.out.getvalue().splitlines() == ["[assistant] delegating", "  [user] sub", "… " + " more"]


def test_the_first_steps_stream_brings_the_messages_no_checkpoint_holds_yet():
    fake = Fake()
    fake.poll(run(0, []))  # the actor has not checkpointed anything: no system prompt or input in the status
    fake.batch(1, "a", 1, 0, "Hel")
    assert "Hel" not in fake.out.getvalue()  # not before the messages that precede it
    fake.follower.on_batch({"step": 1, "source": "a", "attempt": 1, "offset": 1, "deltas": [{"c": "lo "}],
                            "head": [SYSTEM, USER]})
    assert fake.out.getvalue().endswith("[user] hi\n[assistant] Hello ")
    fake.poll(run(1, [SYSTEM, USER, ANSWER], phase="Completed"))
    assert fake.lines() == transcript([SYSTEM, USER, ANSWER])
