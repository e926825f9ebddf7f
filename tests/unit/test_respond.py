"""The CLI's reply checks: refused replies write nothing."""
import pytest

from kubechain.api.v1alpha1 import (CallState, HumanResponse, Phase, TaskRunStatus, ToolCallRecord, WaitingFor)
from kubechain.respond import Refused, Reply, response_patch


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
