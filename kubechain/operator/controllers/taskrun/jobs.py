"""Container tools: each call of one runs as a Kubernetes Job owned by its TaskRun.

The actor journals the call Waiting (waitingFor Job, its Job's name) and the run enters Delegating; it holds
no Ray process while the tool runs. The reconciler creates the Jobs of waiting calls (deterministic names: a
retry or a resumed run finds the same Job, never a second one), at most `maxParallelToolCalls` unfinished at a
time, and deletes a Job once the run's journal holds its result, or the run has ended. Here the operator
- indexes the Jobs by run (`tool_jobs`: what the reconciler observes);
- once a Job finishes, copies its result (the pod's termination message, else the end of its log) onto the
  Job as an annotation and wakes the run (`collect_result`, `wake_run`), which resumes with it.
"""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import AgentSpec
from kubechain.api.v1alpha1.tool import ContainerExecution
from kubechain.core.lifecycle import JobOutcome
from kubechain.core.naming import ANNOTATION_CALL_KEY, ANNOTATION_TOOL_CALL, ANNOTATION_TOOL_OUTCOME, ANNOTATION_TOOL_RESULT, LABEL_TASKRUN_UID
from kubechain.core.resolve import Catalog, resolve_tools

from ...kube import Kube
from ...observed import observed

MAX_RESULT_CHARS = 64 * 1024  # an annotation (all of them together: 256 KiB) carries the result
JOB_LABELS = {LABEL_TASKRUN_UID: kopf.PRESENT}


def job_finished(status: dict[str, Any]) -> tuple[bool, str]:
    """(finished, why) from a Job's status conditions: Complete, or Failed with its reason."""
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return True, "" if condition["type"] == "Complete" else (condition.get("reason") or "Failed")
    return False, ""


@kopf.index("batch", "v1", "jobs", labels=JOB_LABELS)
def tool_jobs(namespace: str, name: str, labels: kopf.Labels, annotations: kopf.Annotations, status: kopf.Status,
              **_: Any):
    """Tool Jobs by (namespace, TaskRun uid): (call key, outcome). Finished once its result is annotated. A Job
    made before calls had keys carries only the call id."""
    outcome = JobOutcome(False)
    if (verdict := annotations.get(ANNOTATION_TOOL_OUTCOME)) is not None:
        outcome = JobOutcome(True, verdict == "Succeeded", annotations.get(ANNOTATION_TOOL_RESULT, ""))
    return {(namespace, labels[LABEL_TASKRUN_UID]): (annotations.get(ANNOTATION_CALL_KEY) or annotations.get(ANNOTATION_TOOL_CALL, name),
                                                   outcome)}


def container_of(catalog: Catalog, namespace: str, agent: str, tool: str) -> ContainerExecution | None:
    """The container spec of one of the agent's tools, as defined now."""
    spec = (catalog.get("Agent", namespace, agent) or {}).get("spec")
    if spec is None:
        return None
    found = next((t for t in resolve_tools(namespace, AgentSpec.model_validate(spec), catalog) if t.name == tool), None)
    return found.execution.container if found is not None else None


def _terminated(pod: Any) -> Any:
    for container in (pod.status.container_statuses or []) if pod.status else []:
        if container.name == "tool" and container.state and container.state.terminated:
            return container.state.terminated
    return None


async def job_result(kube: Kube, namespace: str, name: str, why: str, deadline: int | None) -> JobOutcome:
    """What a finished Job reports: its container's termination message, else the end of its log."""
    if why == "DeadlineExceeded":
        return JobOutcome(True, False, f"the tool's Job {name} did not finish within {deadline} s (timeoutSeconds); "
                                       "it was stopped")
    pods = await kube.job_pods(namespace, name)
    terminated = next((t for t in map(_terminated, pods) if t is not None), None)
    text = (terminated.message or "").strip() if terminated else ""
    if not text and pods:
        text = (await kube.pod_log_tail(namespace, pods[0].metadata.name, "tool", MAX_RESULT_CHARS)).strip()
    if not why:
        return JobOutcome(True, True, text[-MAX_RESULT_CHARS:])
    code = f"exited with code {terminated.exit_code}" if terminated else f"failed ({why})"
    return JobOutcome(True, False, f"the tool's container {code}" + (f": {text[-4096:]}" if text else ""))


def _finished_without_outcome(status: kopf.Status, annotations: kopf.Annotations, **_: Any) -> bool:
    return job_finished(dict(status))[0] and ANNOTATION_TOOL_OUTCOME not in annotations


@kopf.on.event("batch", "v1", "jobs", labels=JOB_LABELS, when=_finished_without_outcome)
@observed("Job")
async def collect_result(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, body: kopf.Body,
                         memo: kopf.Memo, **kwargs: Any) -> None:
    """A tool Job finished: keep its result on the Job until the run journals it."""
    if kwargs.get("type") == "DELETED":
        return
    _, why = job_finished(dict(status))
    outcome = await job_result(memo.state.kube, namespace, name, why, spec.get("activeDeadlineSeconds"))
    await memo.state.kube.annotate_job(namespace, name, {ANNOTATION_TOOL_OUTCOME: "Succeeded" if outcome.succeeded
                                                   else "Failed", ANNOTATION_TOOL_RESULT: outcome.text})


@kopf.on.event("batch", "v1", "jobs", labels=JOB_LABELS, annotations={ANNOTATION_TOOL_OUTCOME: kopf.PRESENT})
@observed("Job")
async def wake_run(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """The run may resume now. Only from the annotated Job's own event: by then `tool_jobs` holds its outcome."""
    owner = next((o for o in body["metadata"].get("ownerReferences", []) if o["kind"] == "TaskRun"), None)
    if kwargs.get("type") != "DELETED" and owner is not None:
        await memo.state.kube.wake("taskruns", namespace, owner["name"], reason=f"Job {name} finished")
