"""Task: launches one TaskRun (owned by the Task), now or once launchImmediately becomes true. The Task shows its
run's phase and result: the TaskRun reconciler writes them (core/reconciler.py, ShowOnTask)."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.operator.observed import observed
from kubechain.api.v1alpha1 import GROUP, VERSION, TaskSpec
from kubechain.core.builders import taskrun_for_task
from kubechain.core.resolve import parse


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
    if await memo.state.kube.create("taskruns", namespace, body):
        logger.info("created TaskRun %s", run_name)
    else:  # ours from a retried handler is fine; a predecessor's (same Task name) must be gone first
        existing = await memo.state.kube.get("taskruns", namespace, run_name)
        owners = [o.get("uid") for o in ((existing or {}).get("metadata") or {}).get("ownerReferences", [])]
        if existing is None or uid not in owners:
            raise kopf.TemporaryError(f"TaskRun {run_name} of a previous Task {name!r} still exists", delay=2)
    if status.get("taskRunName") != run_name or status.get("message"):
        patch.status.update(taskRunName=run_name, message=None)
