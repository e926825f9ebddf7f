"""Names, labels and references of the objects kubechain creates, in one place."""
from __future__ import annotations

import hashlib
import re

from kubechain.api.context import LABEL_TASKRUN  # noqa: F401  (on what a TaskRun owns: tool Jobs, context chunks)
from kubechain.api.v1alpha1 import GROUP

LABEL_TASK = f"{GROUP}/task"
LABEL_AGENT = f"{GROUP}/agent"
LABEL_PARENT_UID = f"{GROUP}/parent-uid"  # on child TaskRuns: the delegating TaskRun (names may exceed 63 chars)
LABEL_ROOT_UID = f"{GROUP}/root-uid"      # on child TaskRuns: the root of the delegation tree (runs per tree)
ANNOTATION_TOOL_CALL = f"{GROUP}/tool-call-id"  # on child TaskRuns and tool Jobs: the LLM's call id (for people)
ANNOTATION_CALL_KEY = f"{GROUP}/call-key"      # ... and the call's key (ToolCallRecord.key), what the operator matches
LABEL_TASKRUN_UID = f"{GROUP}/taskrun-uid"  # on tool Jobs: the TaskRun whose call the Job runs
ANNOTATION_TOOL_OUTCOME = f"{GROUP}/outcome"  # on a finished tool Job: Succeeded or Failed
ANNOTATION_TOOL_RESULT = f"{GROUP}/result"    # ... and its result or error, as the tool message will say it
ANNOTATION_MAX_PRIORITY = f"{GROUP}/max-priority"  # on a Namespace (a cluster admin's): the highest priority there
LABEL_FORKED_FROM = f"{GROUP}/forked-from"  # on a fork: its source run's name (core/fork.py label_value)
LABEL_SCHEDULE = f"{GROUP}/schedule"  # on a TaskSchedule's runs: the schedule
ANNOTATION_SCHEDULED_AT = f"{GROUP}/scheduled-at"  # ... and the due time the run is for (RFC 3339)
ACTOR_ACCOUNT = "kubechain-actor"  # per namespace: the ServiceAccount (and RoleBinding) of its TaskRun actors
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# kopf's finalizer (operator/main.py): on every TaskRun with a daemon or timer, i.e. all of them. The runs the operator
# creates carry it from the start: kopf would add it with a JSON patch that tests the resourceVersion, and in a burst
# that test failed (422) whenever the run's status was written first, each failure a request and another cycle.
FINALIZER = f"{GROUP}/finalizer"
MANAGER = "kubechain"


def actor_name(namespace: str, name: str, uid: str) -> str:
    """Ray actor name of a TaskRun: readable in the dashboard, unique per TaskRun object (uid)."""
    return f"{namespace}/{name}/{uid[:8]}"


def taskrun_name(task_name: str) -> str:
    """The TaskRun a Task launches; deterministic so a retried handler finds, not duplicates, it."""
    return f"{task_name}-run"[:253]


def llm_tool_name(tool_object_name: str) -> str:
    """OpenAI function names allow [a-zA-Z0-9_-]; Kubernetes names may contain dots."""
    return tool_object_name.replace(".", "_")[:64]


def mcp_tool_name(server: str, tool: str) -> str:
    """`<server>__<tool>` as OpenAI allows function names ([a-zA-Z0-9_-]{1,64}). A name that had to change
    (other characters, too long) gets a hash of the tool's own name, so two tools never end up with one name."""
    full = f"{server}__{tool}"
    clean = re.sub(r"[^a-zA-Z0-9_-]", "_", full)
    if clean == full and len(full) <= 64:
        return full
    return f"{clean[:55]}_{hashlib.sha256(tool.encode()).hexdigest()[:8]}"


def child_taskrun_name(parent: str, idempotency_key: str) -> str:
    """The TaskRun a delegate call runs as; deterministic so a retried delegation finds, not duplicates, it. From
    the call's idempotency key (uid/step/call id): an LLM's call id alone may repeat in a later step."""
    return f"{parent[:200]}-{hashlib.sha256(idempotency_key.encode()).hexdigest()[:8]}"


def tool_job_name(taskrun: str, idempotency_key: str) -> str:
    """The Job a container call runs as: from the call's idempotency key, so a resumed run finds the same Job.
    Job names become pod labels: at most 63 characters."""
    return f"{taskrun[:45]}-tool-{hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]}".replace(".", "-")
