"""The CLI's reply checks: refused replies write nothing."""
import pytest

from kubechain.api.v1alpha1 import (CallState, HumanResponse, Phase, TaskRunStatus, ToolCallRecord, WaitingFor)
from kubechain.clients.respond import Refused, Reply, response_patch


def run(phase=Phase.PAUSED_FOR_USER_INPUT, responses=None, *records):
    status = TaskRunStatus(phase=phase, tool_call_history=list(records))
    return {"metadata": {"name": "r"}, "spec": {"taskRef": {"name": "t"}, "responses": responses or {}},
            "status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}


def waiting(id_, kind):
    return ToolCallRecord(id=id_, step=1, tool="t", arguments="{}", state=CallState.WAITING, waiting_for=kind,
                          question=f"q{id_}")


ANSWER = Reply(WaitingFor.ANSWER, HumanResponse(answer="yes"))
APPROVE = Reply(WaitingFor.APPROVAL, HumanResponse(approved=True))


def test_the_only_waiting_call_of_the_kind_is_chosen():
    obj = run(Phase.PAUSED_FOR_USER_INPUT, None, waiting("a", WaitingFor.ANSWER), waiting("b", WaitingFor.APPROVAL))
    assert response_patch(obj, ANSWER) == ("a", {"spec": {"responses": {"a": {"answer": "yes"}}}})
    assert response_patch(obj, APPROVE) == ("b", {"spec": {"responses": {"b": {"approved": True}}}})


@pytest.mark.parametrize("obj, reply, call, message", [
    (run(Phase.RUNNING), ANSWER, None, "is Running, not waiting for a human"),
    (run(Phase.PAUSED_FOR_USER_INPUT, None, waiting("a", WaitingFor.ANSWER), waiting("b", WaitingFor.ANSWER)),
     ANSWER, None, "has 2 calls waiting for an answer: a (qa), b (qb); choose one with --call"),
    (run(Phase.PAUSED_FOR_USER_INPUT, None, waiting("a", WaitingFor.ANSWER)), APPROVE, "a",
     "call a of TaskRun r is not waiting for approval (waiting: none)"),
    (run(Phase.PAUSED_FOR_USER_INPUT, {"a": {"answer": "no"}}, waiting("a", WaitingFor.ANSWER)), ANSWER, None,
     "was already answered"),
])
def test_refusals(obj, reply, call, message):
    with pytest.raises(Refused, match=message.replace("(", r"\(").replace(")", r"\)")):
        response_patch(obj, reply, call)


class FakeApi:
    """The two CustomObjectsApi calls a reply makes, recorded."""

    def __init__(self, obj):
        self.obj, self.patches = obj, []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return self.obj

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.patches.append((namespace, plural, name, body))


def test_send_reply_writes_the_checked_patch_and_a_refusal_writes_nothing():
    """The CLI and the web console reply through send_reply: one read, the checks, one patch."""
    from kubechain.clients.respond import send_cancel, send_reply

    api = FakeApi(run(Phase.PAUSED_FOR_USER_INPUT, None, waiting("a", WaitingFor.ANSWER)))
    assert send_reply(api, "ns", "r", ANSWER) == "a"
    assert api.patches == [("ns", "taskruns", "r", {"spec": {"responses": {"a": {"answer": "yes"}}}})]
    with pytest.raises(Refused):
        send_reply(api, "ns", "r", APPROVE)
    send_cancel(api, "ns", "r")
    assert len(api.patches) == 2 and api.patches[1][3] == {"spec": {"cancel": True}}
