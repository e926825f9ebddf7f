"""Pure builders of the objects kubechain creates."""
from __future__ import annotations

from typing import Any

from kubechain.api.v1alpha1 import API_VERSION, Budget, RunLimits, RunTemplate, TaskRunSpec, ToolCallRecord, Usage
from kubechain.api.v1alpha1.tool import ContainerExecution
from kubechain.core.naming import (ACTOR_ACCOUNT, ANNOTATION_CALL_KEY, ANNOTATION_SCHEDULED_AT, ANNOTATION_TOOL_CALL,
                                   LABEL_AGENT, LABEL_MANAGED_BY, LABEL_PARENT_UID, LABEL_ROOT_UID, LABEL_SCHEDULE,
                                   FINALIZER, LABEL_TASK, LABEL_TASKRUN, LABEL_TASKRUN_UID, MANAGER, taskrun_name)


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
        "metadata": {"name": taskrun_name(task_name), "namespace": namespace, "finalizers": [FINALIZER],
                     "labels": {LABEL_TASK: task_name, LABEL_AGENT: agent_name},
                     "ownerReferences": [owner_reference("Task", task_name, task_uid)]},
        "spec": {"taskRef": {"name": task_name}, **_limits(limits)},
    }


def scheduled_taskrun(namespace: str, schedule: str, schedule_uid: str, template: RunTemplate, name: str,
                      due: str) -> dict[str, Any]:
    """The run of a TaskSchedule's due time: owned by the schedule (deleting it deletes its runs), named after the
    time (a second attempt finds the first)."""
    return {
        "apiVersion": API_VERSION, "kind": "TaskRun",
        "metadata": {"name": name, "namespace": namespace, "finalizers": [FINALIZER],
                     "labels": {LABEL_SCHEDULE: schedule, LABEL_AGENT: template.agent_ref.name},
                     "annotations": {ANNOTATION_SCHEDULED_AT: due},
                     "ownerReferences": [owner_reference("TaskSchedule", schedule, schedule_uid)]},
        "spec": {"agentRef": {"name": template.agent_ref.name}, "userInput": template.user_input,
                 **_limits(template)},
    }


def child_budget(parent: TaskRunSpec, spent: Usage, cost: float | None, children: int) -> Budget | None:
    """A child's share of what its parent's budget has left: the children a step delegates to at once share it
    equally, so together they never pass it. At least 1 token (a spent budget: the child stops at once)."""
    if parent.budget is None:
        return None
    tokens, money = parent.budget.max_tokens, parent.budget.max_cost
    return Budget(max_tokens=None if tokens is None else max((tokens - spent.total_tokens) // children, 1),
                  max_cost=None if money is None else max((money - (cost or 0.0)) / children, 1e-9))


def child_taskrun(namespace: str, parent_name: str, parent_uid: str, parent: TaskRunSpec, parent_agent: str,
                  record: ToolCallRecord, message: str, traceparent: str | None = None,
                  budget: Budget | None = None) -> dict[str, Any]:
    """The TaskRun a delegate call runs as: owned by its parent (deleting the parent deletes the tree), with
    the parent's limits (its budget: the share `budget`, see child_budget) and the chain of agents above it."""
    lineage = [*(parent.parent.agents if parent.parent else []), parent_agent]
    root = (parent.parent.root_uid or parent.parent.uid) if parent.parent else parent_uid
    return {
        "apiVersion": API_VERSION, "kind": "TaskRun",
        "metadata": {"name": record.child_run, "namespace": namespace, "finalizers": [FINALIZER],
                     "labels": {LABEL_AGENT: record.delegated_to, LABEL_PARENT_UID: parent_uid, LABEL_ROOT_UID: root},
                     "annotations": {ANNOTATION_TOOL_CALL: record.id, ANNOTATION_CALL_KEY: record.key},
                     "ownerReferences": [owner_reference("TaskRun", parent_name, parent_uid)]},
        "spec": {"agentRef": {"name": record.delegated_to}, "userInput": message,
                 **_limits(parent.model_copy(update={"budget": budget})),
                 "parent": {"name": parent_name, "uid": parent_uid, "toolCallId": record.id, "callKey": record.key,
                            "rootUid": root, "agents": lineage,
                            **({"traceparent": traceparent} if traceparent else {})}},
    }


def tool_job(namespace: str, taskrun: str, taskrun_uid: str, record: ToolCallRecord,
             container: ContainerExecution) -> dict[str, Any]:
    """The Job a container call runs as: owned by the TaskRun, run once (no retries: a tool with effects must
    not run twice unasked), killed at the tool's timeout, as restricted as Pod Security's `restricted` profile."""
    env = [{"name": "KUBECHAIN_ARGUMENTS", "value": record.arguments or "{}"},
           {"name": "KUBECHAIN_TOOL", "value": record.tool},
           {"name": "KUBECHAIN_IDEMPOTENCY_KEY", "value": record.idempotency_key}]
    for var in container.env:
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            env.append({"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        else:
            env.append({"name": var.name, "value": var.value})
    labels = {LABEL_TASKRUN_UID: taskrun_uid, LABEL_TASKRUN: taskrun[:63].rstrip("-_.")}
    tool_container = {
        "name": "tool", "image": container.image, "env": env,
        **({"command": container.command} if container.command else {}),
        **({"args": container.args} if container.args else {}),
        "resources": container.resources.to_wire(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # a writable scratch dir on a read-only root
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "containers": [tool_container], "volumes": [{"name": "tmp", "emptyDir": {}}],
        "automountServiceAccountToken": container.service_account_name is not None,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if container.service_account_name:
        pod_spec["serviceAccountName"] = container.service_account_name
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": record.job, "namespace": namespace, "labels": labels,
                     "annotations": {ANNOTATION_TOOL_CALL: record.id, ANNOTATION_CALL_KEY: record.key},
                     "ownerReferences": [owner_reference("TaskRun", taskrun, taskrun_uid)]},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": container.timeout_seconds,
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }


def actor_account(namespace: str) -> dict[str, Any]:
    """The identity of a namespace's TaskRun actors: nothing mounts it, the operator hands its tokens out."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
            "metadata": {"name": ACTOR_ACCOUNT, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGER}}}


def actor_binding(namespace: str) -> dict[str, Any]:
    """Binds the namespace's actor account to the `kubechain-actor` ClusterRole (kuberay/base/actor-rbac.yaml):
    a RoleBinding grants its rules in this namespace only."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": ACTOR_ACCOUNT, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGER}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ACTOR_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACTOR_ACCOUNT, "namespace": namespace}]}
