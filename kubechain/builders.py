"""Pure builders of the objects kubechain creates."""
from __future__ import annotations

from typing import Any

from kubechain.api.v1alpha1 import API_VERSION
from kubechain.naming import LABEL_AGENT, LABEL_TASK, taskrun_name


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def taskrun_for_task(namespace: str, task_name: str, task_uid: str, agent_name: str) -> dict[str, Any]:
    """The TaskRun a Task launches, owned by the Task so deleting the Task deletes the run."""
    return {
        "apiVersion": API_VERSION, "kind": "TaskRun",
        "metadata": {"name": taskrun_name(task_name), "namespace": namespace,
                     "labels": {LABEL_TASK: task_name, LABEL_AGENT: agent_name},
                     "ownerReferences": [owner_reference("Task", task_name, task_uid)]},
        "spec": {"taskRef": {"name": task_name}},
    }
