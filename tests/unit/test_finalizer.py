"""The TaskRuns the operator creates carry kopf's finalizer from the start (kubechain/core/naming.py FINALIZER): kopf
adds it otherwise with a JSON patch testing the resourceVersion, which fails (422) whenever the run's status was
written first, as it is at once under a burst."""
from __future__ import annotations

from kubechain.api.v1alpha1 import RunTemplate, TaskRunSpec, ToolCallRecord
from kubechain.core.builders import child_taskrun, scheduled_taskrun, taskrun_for_task
from kubechain.core.naming import FINALIZER


def test_every_taskrun_the_operator_creates_carries_the_finalizer_kopf_is_configured_with():
    import inspect

    from kubechain.operator import main

    # configure() itself starts the metrics server and tracing: its source says which finalizer it sets
    assert "settings.persistence.finalizer = FINALIZER" in inspect.getsource(main.configure)
    assert main.FINALIZER == FINALIZER == "kubechain.dev/finalizer"
    record = ToolCallRecord(id="c1", step=1, tool="t", arguments="{}", child_run="run-child", delegated_to="helper")
    bodies = [
        taskrun_for_task("ns", "task", "uid-1", "helper"),
        scheduled_taskrun("ns", "nightly", "uid-2", RunTemplate.model_validate(
            {"agentRef": {"name": "helper"}, "userInput": "hi"}), "nightly-1", "2026-12-02T00:00:00Z"),
        child_taskrun("ns", "run", "uid-3", TaskRunSpec.model_validate({"taskRef": {"name": "task"}}), "boss",
                      record, "find x"),
    ]
    assert [b["metadata"]["finalizers"] for b in bodies] == [[FINALIZER]] * 3
