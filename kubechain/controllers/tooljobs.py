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

import json
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION, CallState, TaskRunSpec, TaskRunStatus, WaitingFor
from kubechain.builders import tool_job
from kubechain.naming import ANNOTATION_TOOL_CALL, ANNOTATION_TOOL_OUTCOME, ANNOTATION_TOOL_RESULT, LABEL_TASKRUN_UID
from kubechain.observability.handlers import observed
from kubechain.taskrun_lifecycle import JobOutcome

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


def jobs_of(index: kopf.Index, namespace: str, uid: str) -> dict[str, JobOutcome]:
    return dict(index.get((namespace, uid), []))
