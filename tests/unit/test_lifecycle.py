import pytest

from kubechain.api.v1alpha1 import Phase, TaskRunStatus
from kubechain.taskrun_lifecycle import (IllegalTransition, Nothing, Observation, Schedule, Wait,
                                         decide, enter)

READY = Observation(task_found=True, agent_name="a", agent_ready=True)


@pytest.mark.parametrize("phase, seen, expected", [
    pytest.param(Phase.PENDING, Observation(task_found=False), Wait, id="pending-no-task->wait"),
    pytest.param(Phase.PENDING, Observation(True, "a", False, "LLM down"), Wait, id="pending-agent-not-ready->wait"),
    pytest.param(Phase.PENDING, READY, Schedule, id="pending->running"),
    pytest.param(Phase.RUNNING, READY, Nothing, id="running->supervisor's"),
    pytest.param(Phase.PAUSED_FOR_USER_INPUT, READY, Nothing, id="paused->nothing"),
    pytest.param(Phase.COMPLETED, READY, Nothing, id="completed->nothing"),
    pytest.param(Phase.FAILED, READY, Nothing, id="failed->nothing"),
])
def test_decide(phase, seen, expected):
    assert isinstance(decide(TaskRunStatus(phase=phase), seen), expected)


def test_wait_says_why():
    decision = decide(TaskRunStatus(), Observation(True, "helper", False, "LLM 'x' not found"))
    assert decision == Wait("waiting for Agent 'helper' to be ready: LLM 'x' not found")


def test_enter_records_history_and_refuses_illegal_edges():
    status = enter(TaskRunStatus(), Phase.RUNNING, "Scheduled", "go")
    status = enter(status, Phase.COMPLETED, "FinalAnswer")
    assert [(t.phase, t.reason) for t in status.phase_history] == [
        (Phase.RUNNING, "Scheduled"), (Phase.COMPLETED, "FinalAnswer")]
    with pytest.raises(IllegalTransition, match="Completed -> Running"):
        enter(status, Phase.RUNNING, "Again")
