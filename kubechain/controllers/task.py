"""Task: launches one TaskRun (owned by the Task), now or once launchImmediately becomes true."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.observability.handlers import observed
from kubechain.api.v1alpha1 import GROUP, VERSION, TaskSpec
from kubechain.builders import taskrun_for_task
from kubechain.naming import LABEL_TASK
from kubechain.resolve import parse


@kopf.on.resume(GROUP, VERSION, "tasks")
@kopf.on.create(GROUP, VERSION, "tasks")
@kopf.on.update(GROUP, VERSION, "tasks")
@observed("Task")
async def reconcile(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status,
                    patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    task, error = parse(TaskSpec, dict(spec))
    if error:
        patch.status["message"] = f"invalid spec: {error}"
        return
    if status.get("taskRunName"):
        return  # launched once: a Task is one request (a deleted TaskRun is not run again)
    if not task.launch_immediately:
        patch.status["message"] = "not launched: set spec.launchImmediately to true to start it"
        return
    body = taskrun_for_task(namespace, name, uid, task.agent_ref.name, task)
    run_name = body["metadata"]["name"]
    if await memo.kube.create("taskruns", namespace, body):
        logger.info("created TaskRun %s", run_name)
    else:  # ours from a retried handler is fine; a predecessor's (same Task name) must be gone first
        existing = await memo.kube.get("taskruns", namespace, run_name)
        owners = [o.get("uid") for o in ((existing or {}).get("metadata") or {}).get("ownerReferences", [])]
        if existing is None or uid not in owners:
            raise kopf.TemporaryError(f"TaskRun {run_name} of a previous Task {name!r} still exists", delay=2)
    if status.get("taskRunName") != run_name or status.get("message"):
        patch.status.update(taskRunName=run_name, message=None)


@kopf.on.event(GROUP, VERSION, "taskruns", labels={LABEL_TASK: kopf.PRESENT})
@observed("Task")
async def mirror_run(type: str, namespace: str, labels: kopf.Labels, status: kopf.Status, memo: kopf.Memo,
                     **_: Any) -> None:
    """The Task shows its TaskRun's phase and result, so `kubectl get tasks` tells how each request went."""
    phase = status.get("phase", "Pending")
    if type == "DELETED" or memo.task_phases.get((namespace, labels[LABEL_TASK])) == phase:
        return
    await memo.kube.patch_status("tasks", namespace, labels[LABEL_TASK],
                                 {"phase": phase, "output": status.get("output"), "error": status.get("error")})
    memo.task_phases[(namespace, labels[LABEL_TASK])] = phase
