"""Pure builders of the objects kubechain creates."""
from __future__ import annotations

from typing import Any

from kubechain.api.v1alpha1 import API_VERSION, RunLimits, TaskRunSpec, ToolCallRecord
from kubechain.naming import ANNOTATION_TOOL_CALL, LABEL_AGENT, LABEL_PARENT_UID, LABEL_TASK, taskrun_name


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _limits(limits: RunLimits) -> dict[str, Any]:
    return RunLimits.model_validate(limits.model_dump()).to_wire()


def taskrun_for_task(namespace: str, task_name: str, task_uid: str, agent_name: str,
                     limits: RunLimits = RunLimits()) -> dict[str, Any]:
    """The TaskRun a Task launches, owned by the Task so deleting the Task deletes the run."""
    return {
        "apiVersion": API_VERSION, "kind": "TaskRun",
        "metadata": {"name": taskrun_name(task_name), "namespace": namespace,
                     "labels": {LABEL_TASK: task_name, LABEL_AGENT: agent_name},
                     "ownerReferences": [owner_reference("Task", task_name, task_uid)]},
        "spec": {"taskRef": {"name": task_name}, **_limits(limits)},
    }


def child_taskrun(namespace: str, parent_name: str, parent_uid: str, parent: TaskRunSpec, parent_agent: str,
                  record: ToolCallRecord, message: str, traceparent: str | None = None) -> dict[str, Any]:
    """The TaskRun a delegate call runs as: owned by its parent (deleting the parent deletes the tree), with
    the parent's limits and the chain of agents above it."""
    lineage = [*(parent.parent.agents if parent.parent else []), parent_agent]
    return {
        "apiVersion": API_VERSION, "kind": "TaskRun",
        "metadata": {"name": record.child_run, "namespace": namespace,
                     "labels": {LABEL_AGENT: record.delegated_to, LABEL_PARENT_UID: parent_uid},
                     "annotations": {ANNOTATION_TOOL_CALL: record.id},
                     "ownerReferences": [owner_reference("TaskRun", parent_name, parent_uid)]},
        "spec": {"agentRef": {"name": record.delegated_to}, "userInput": message, **_limits(parent),
                 "parent": {"name": parent_name, "uid": parent_uid, "toolCallId": record.id, "agents": lineage,
                            **({"traceparent": traceparent} if traceparent else {})}},
    }
def tool_job(*a, **k): raise NotImplementedError
