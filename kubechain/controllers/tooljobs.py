"""Container tools: each call of one runs as a Kubernetes Job owned by its TaskRun.

The actor journals the call Waiting (waitingFor Job, its Job's name) and the run enters Delegating; it holds
no Ray process while the tool runs. Here the operator
- creates the Jobs of waiting calls (`start_jobs`, deterministic names: a retry or a resumed run finds the
  same Job, never a second one), at most `maxParallelToolCalls` unfinished at a time;
- once a Job finishes, copies its result (the pod's termination message, else the end of its log) onto the
  Job as an annotation and wakes the run (`collect_result`), which resumes with it (`tool_jobs` index);
- deletes a Job once the run's journal holds its result, or the run has ended (`clean_up_jobs`).
"""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION, AgentSpec, CallState, TaskRunSpec, TaskRunStatus, WaitingFor
from kubechain.api.v1alpha1.tool import ContainerExecution
from kubechain.builders import tool_job
from kubechain.naming import ANNOTATION_TOOL_CALL, ANNOTATION_TOOL_OUTCOME, ANNOTATION_TOOL_RESULT, LABEL_TASKRUN_UID
from kubechain.observability.handlers import observed
from kubechain.resolve import resolve_tools
from kubechain.taskrun_lifecycle import JobOutcome

from .catalog import IndexCatalog, ref_body

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
    """Tool Jobs by (namespace, TaskRun uid): (call id, outcome). Finished once its result is annotated."""
    outcome = JobOutcome(False)
    if (verdict := annotations.get(ANNOTATION_TOOL_OUTCOME)) is not None:
        outcome = JobOutcome(True, verdict == "Succeeded", annotations.get(ANNOTATION_TOOL_RESULT, ""))
    return {(namespace, labels[LABEL_TASKRUN_UID]): (annotations.get(ANNOTATION_TOOL_CALL, name), outcome)}


def jobs_of(indices: dict[str, Any], namespace: str, uid: str, status: TaskRunStatus) -> dict[str, JobOutcome]:
    """Outcomes of the run's waiting container calls, by call id: its Job's, or a failure if the call's tool is
    no longer a container tool of the agent (then no Job will ever run it)."""
    known = dict(indices["tool_jobs"].get((namespace, uid), []))
    catalog = IndexCatalog(indices)
    for record in status.tool_call_history:
        if (record.state is CallState.WAITING and record.waiting_for is WaitingFor.JOB and record.id not in known
                and container_of(catalog, namespace, status.agent or "", record.tool) is None):
            known[record.id] = JobOutcome(True, False, f"tool {record.tool!r} is no longer a container tool of agent "
                                                       f"{status.agent!r}; the call did not run")
    return known


def container_of(catalog: IndexCatalog, namespace: str, agent: str, tool: str) -> ContainerExecution | None:
    """The container spec of one of the agent's tools, as defined now."""
    spec = (catalog.get("Agent", namespace, agent) or {}).get("spec")
    if spec is None:
        return None
    found = next((t for t in resolve_tools(namespace, AgentSpec.model_validate(spec), catalog) if t.name == tool), None)
    return found.execution.container if found is not None else None


async def start_jobs(memo: kopf.Memo, namespace: str, name: str, uid: str, spec: TaskRunSpec, status: TaskRunStatus,
                     indices: dict[str, Any]) -> None:
    """Create the Jobs of waiting container calls, keeping at most maxParallelToolCalls unfinished."""
    known = jobs_of(indices, namespace, uid, status)
    waiting = [r for r in status.tool_call_history if r.state is CallState.WAITING and r.waiting_for is WaitingFor.JOB]
    room = spec.max_parallel_tool_calls - sum(1 for r in waiting if r.id in known and not known[r.id].finished)
    catalog = IndexCatalog(indices)
    for record in (r for r in waiting if r.id not in known):
        if room <= 0:
            return
        container = container_of(catalog, namespace, status.agent or "", record.tool)
        if container is not None and await memo.kube.create_job(namespace, tool_job(namespace, name, uid, record, container)):
            kopf.event(ref_body("TaskRun", namespace, name, uid), type="Normal", reason="ToolJobCreated",
                       message=f"call {record.id} ({record.tool}): Job {record.job}")
        room -= 1


def _terminated(pod: Any) -> Any:
    for container in (pod.status.container_statuses or []) if pod.status else []:
        if container.name == "tool" and container.state and container.state.terminated:
            return container.state.terminated
    return None


async def job_result(memo: kopf.Memo, namespace: str, name: str, why: str, deadline: int | None) -> JobOutcome:
    """What a finished Job reports: its container's termination message, else the end of its log."""
    if why == "DeadlineExceeded":
        return JobOutcome(True, False, f"the tool's Job {name} did not finish within {deadline} s (timeoutSeconds); "
                                       "it was stopped")
    pods = await memo.kube.job_pods(namespace, name)
    terminated = next((t for t in map(_terminated, pods) if t is not None), None)
    text = (terminated.message or "").strip() if terminated else ""
    if not text and pods:
        text = (await memo.kube.pod_log_tail(namespace, pods[0].metadata.name, "tool", MAX_RESULT_CHARS)).strip()
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
    outcome = await job_result(memo, namespace, name, why, spec.get("activeDeadlineSeconds"))
    await memo.kube.annotate_job(namespace, name, {ANNOTATION_TOOL_OUTCOME: "Succeeded" if outcome.succeeded
                                                   else "Failed", ANNOTATION_TOOL_RESULT: outcome.text})


@kopf.on.event("batch", "v1", "jobs", labels=JOB_LABELS, annotations={ANNOTATION_TOOL_OUTCOME: kopf.PRESENT})
@observed("Job")
async def wake_run(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """The run may resume now. Only from the annotated Job's own event: by then `tool_jobs` holds its outcome."""
    owner = next((o for o in body["metadata"].get("ownerReferences", []) if o["kind"] == "TaskRun"), None)
    if kwargs.get("type") != "DELETED" and owner is not None:
        await memo.kube.wake("taskruns", namespace, owner["name"], reason=f"Job {name} finished")


def _has_jobs(namespace: str, uid: str, tool_jobs: kopf.Index, **_: Any) -> bool:
    return (namespace, uid) in tool_jobs


@kopf.on.event(GROUP, VERSION, "taskruns", when=_has_jobs)
async def clean_up_jobs(namespace: str, uid: str, status: kopf.Status, tool_jobs: kopf.Index, memo: kopf.Memo,
                        **kwargs: Any) -> None:
    """Delete the Jobs whose results the run has journaled, and all of them once it has ended."""
    known = dict(tool_jobs.get((namespace, uid), []))
    if not known:
        return
    current = TaskRunStatus.model_validate(dict(status))
    for record in current.tool_call_history:
        if record.job and record.id in known and (record.state.finished or current.phase.terminal):
            await memo.kube.delete_job(namespace, record.job)
