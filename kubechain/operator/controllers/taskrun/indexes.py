"""kopf indexes of TaskRuns: what the reconciler observes about a run's neighbours, kept current from the watch
stream (memory, not the apiserver). Tool Jobs are indexed in jobs.py; Tasks, Agents and the rest in
controllers/catalog.py."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, Usage
from kubechain.core.fork import source_of
from kubechain.core.quotas import RunSpend
from kubechain.core.lifecycle import ChildOutcome
from kubechain.core.limits import max_priority
from kubechain.core.naming import ANNOTATION_MAX_PRIORITY, LABEL_AGENT, LABEL_PARENT_UID, LABEL_ROOT_UID
from kubechain.core.queueing import Queued
from kubechain.core.storage import ANNOTATION_MAX_STORED_BYTES, Held, stored_bytes

from ...metrics import STORED

from .filters import is_pending, is_running

QUEUE = "queue"
ANNOTATION_MAX_RUNNING = f"{GROUP}/max-running"


@kopf.index(GROUP, VERSION, "taskruns", when=is_pending)
def pending_taskruns(namespace: str, name: str, labels: kopf.Labels, **_: Any):
    """Pending TaskRuns by (namespace, agent), to wake them when the agent turns ready."""
    return {(namespace, labels.get(LABEL_AGENT, "")): name}


@kopf.index(GROUP, VERSION, "taskruns", labels={LABEL_PARENT_UID: kopf.PRESENT})
def child_taskruns(namespace: str, name: str, labels: kopf.Labels, status: kopf.Status, **_: Any):
    """Child TaskRuns by (namespace, parent uid): what a delegating parent waits for."""
    spent = status.get("treeUsage")
    outcome = ChildOutcome(Phase(status.get("phase", "Pending")), status.get("output") or "", status.get("error") or "",
                           Usage.model_validate(spent) if spent else None, status.get("treeCost"),
                           status.get("currency"))
    return {(namespace, labels[LABEL_PARENT_UID]): (name, outcome)}


@kopf.index(GROUP, VERSION, "taskruns", labels={LABEL_ROOT_UID: kopf.PRESENT})
def tree_taskruns(namespace: str, name: str, labels: kopf.Labels, **_: Any):
    """Runs of a delegation tree below its root, by (namespace, root uid): what KUBECHAIN_MAX_RUNS_PER_TREE counts."""
    return {(namespace, labels[LABEL_ROOT_UID]): name}


@kopf.index(GROUP, VERSION, "taskruns", when=is_pending)
def queued_taskruns(namespace: str, name: str, uid: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any):
    """Every Pending TaskRun, for the admission queue: (uid, kind and name of what names its agent: the Agent, its
    Task, or a fork's source run; queue entry)."""
    ref = (spec.get("agentRef") or spec.get("taskRef") or spec.get("forkOf") or {}).get("name", "")
    kind = "Agent" if spec.get("agentRef") else "Fork" if spec.get("forkOf") else "Task"
    entry = Queued(namespace, name, int(spec.get("priority") or 0), meta.get("creationTimestamp") or "")
    return {QUEUE: (uid, kind, ref, entry)}


@kopf.index(GROUP, VERSION, "taskruns")
def fork_sources(namespace: str, name: str, uid: str, status: kopf.Status, **_: Any):
    """Every TaskRun by (namespace, name) as a possible fork source (core/fork.py ForkSource: its uid, step, agent,
    phase and the states of its latest step's calls): what admission and a Pending fork check forkOf against."""
    return {(namespace, name): source_of(uid, status)}


@kopf.index(GROUP, VERSION, "taskruns", when=is_running)
def running_taskruns(namespace: str, uid: str, status: kopf.Status, **_: Any):
    """Running TaskRuns (each holds a slot) by namespace, with their agent: what the limits count."""
    return {namespace: (uid, status.get("agent") or "")}


@kopf.index("", "v1", "namespaces", annotations={ANNOTATION_MAX_PRIORITY: kopf.PRESENT})
def namespace_priorities(name: str, annotations: kopf.Annotations, **_: Any):
    """Namespaces with their own highest priority (annotation kubechain.dev/max-priority, a cluster admin's)."""
    return {name: annotations.get(ANNOTATION_MAX_PRIORITY, "")}


def priority_limit(namespace: str, indexes: dict[str, Any], default: int) -> tuple[int, bool]:
    """(the namespace's highest priority, whether its own annotation says so rather than the default)."""
    values = indexes["namespace_priorities"].get(namespace)
    annotation = next(iter(values), None) if values else None
    return max_priority(annotation, default), annotation is not None


@kopf.index("", "v1", "namespaces", annotations={ANNOTATION_MAX_RUNNING: kopf.PRESENT})
def namespace_limits(name: str, annotations: kopf.Annotations, **_: Any):
    """Namespaces with their own limit (annotation kubechain.dev/max-running)."""
    value = annotations.get(ANNOTATION_MAX_RUNNING, "")
    return {name: int(value)} if value.isdigit() else None



@kopf.index(GROUP, VERSION, "taskruns")
def run_spend(namespace: str, uid: str, status: kopf.Status, **_: Any):
    """What each TaskRun has spent itself, by namespace: what RunQuotas count (controllers/quota.py)."""
    phase = Phase(status.get("phase") or Phase.PENDING.value)
    return {namespace: RunSpend(uid, int((status.get("usage") or {}).get("totalTokens") or 0), status.get("cost"),
                                status.get("currency"), phase.terminal, phase is Phase.RUNNING)}


@kopf.index(GROUP, VERSION, "runquotas")
def run_quotas(name: str, spec: kopf.Spec, status: kopf.Status, **_: Any):
    """RunQuotas by the namespace they limit: (name, maxRunning, the message of a spent one or "")."""
    running = spec.get("maxRunning")
    return {spec.get("namespace", ""): (name, None if running is None else int(running),
                                        status.get("message", "") if status.get("exceeded") else "")}


@kopf.index(GROUP, VERSION, "taskruns")
def stored_taskruns(namespace: str, uid: str, status: kopf.Status, **_: Any):
    """What each TaskRun that has started keeps in the apiserver, by namespace: what the storage cap counts
    (kubechain/core/storage.py; a Pending run's status, its queue message, is not counted: its own would leave it
    no room). Also kubechain_stored_bytes: the metric follows the watch (a deleted run is forgotten by the
    reconciler's Remember)."""
    phase = Phase(status.get("phase") or Phase.PENDING.value)
    if phase is Phase.PENDING:
        return None
    held = Held(uid, stored_bytes(dict(status)), not phase.terminal)
    STORED.observe(uid, namespace, held.bytes)
    return {namespace: held}


@kopf.index("", "v1", "namespaces", annotations={ANNOTATION_MAX_STORED_BYTES: kopf.PRESENT})
def namespace_storage_caps(name: str, annotations: kopf.Annotations, **_: Any):
    """Namespaces with their own storage cap (annotation kubechain.dev/max-stored-bytes, a cluster admin's)."""
    return {name: annotations.get(ANNOTATION_MAX_STORED_BYTES, "")}
