"""Container tools: the Job a call runs as, and what the Tool model refuses (pure)."""
import pytest
from pydantic import ValidationError

from kubechain.api.v1alpha1 import ToolCallRecord
from kubechain.api.v1alpha1.tool import ContainerExecution
from kubechain.core.builders import tool_job
from kubechain.operator.controllers.taskrun.jobs import job_finished
from kubechain.core.naming import tool_job_name


def test_job_names_follow_the_idempotency_key_and_fit_a_label():
    assert tool_job_name("run", "uid/1/call_a") == tool_job_name("run", "uid/1/call_a")
    assert tool_job_name("run", "uid/1/call_a") != tool_job_name("run", "uid/2/call_a")
    long = tool_job_name("r" * 253, "k")
    assert len(long) <= 63 and long.startswith("r" * 45 + "-tool-")


def test_the_job_runs_once_restricted_with_arguments_in_the_environment():
    record = ToolCallRecord(id="c1", step=1, tool="build", arguments='{"x": 1}', idempotency_key="u/1/c1",
                            job="run-tool-abc")
    container = ContainerExecution.model_validate({
        "image": "busybox:1.36", "args": ["-c", "true"],
        "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "timeoutSeconds": 30})
    job = tool_job("ns", "run", "uid-1", record, container)
    assert job["metadata"]["ownerReferences"][0] | {"uid": "x"} == {
        "apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "name": "run", "uid": "x", "controller": True,
        "blockOwnerDeletion": True}
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 30)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    (tool,) = pod["containers"]
    assert tool["env"][:3] == [{"name": "KUBECHAIN_ARGUMENTS", "value": '{"x": 1}'},
                               {"name": "KUBECHAIN_TOOL", "value": "build"},
                               {"name": "KUBECHAIN_IDEMPOTENCY_KEY", "value": "u/1/c1"}]
    assert tool["env"][4] == {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert tool["securityContext"]["capabilities"] == {"drop": ["ALL"]} and "command" not in tool
    assert tool["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("spec, message", [
    ({"image": "Not An Image"}, "string should match pattern"),
    ({"image": "busybox", "resources": {"limits": {"cpu": "lots"}}}, "string should match pattern"),
    ({"image": "busybox", "env": [{"name": "KUBECHAIN_TOOL", "value": "x"}]}, "set by kubechain: KUBECHAIN_TOOL"),
    ({"image": "busybox", "env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     "set value or valueFrom, not both"),
])
def test_bad_container_specs_are_refused(spec, message):
    with pytest.raises(ValidationError) as refused:
        ContainerExecution.model_validate(spec)
    assert message in str(refused.value).lower() or message in str(refused.value)


def test_a_job_is_finished_when_complete_or_failed():
    assert job_finished({}) == (False, "")
    assert job_finished({"conditions": [{"type": "Complete", "status": "True"}]}) == (True, "")
    assert job_finished({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}) == (
        True, "DeadlineExceeded")
    assert job_finished({"conditions": [{"type": "Failed", "status": "False"}]}) == (False, "")
