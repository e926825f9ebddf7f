"""Operator-set limits that objects are checked against, as pure functions: each says what is over which limit
(naming the setting), or None. The validating webhook refuses such objects (admission.py); the actor checks a ray
tool again when it is called (a Tool admitted before the limit changed), and the queue never ranks a run above
its namespace's maximum priority."""
from __future__ import annotations

from kubechain.api.runspec import RayToolLimits
from kubechain.api.v1alpha1 import TaskRunSpec
from kubechain.api.v1alpha1.tool import RayExecution, ToolSpec
from kubechain.core.naming import ANNOTATION_MAX_PRIORITY


def ray_tool_problem(ray: RayExecution, limits: RayToolLimits) -> str | None:
    """Why a ray tool may not reserve what it asks for, or None."""
    if ray.num_cpus < limits.min_cpus:
        return (f"numCpus {ray.num_cpus:g} is under the least a ray tool may reserve, {limits.min_cpus:g} "
                "(KUBECHAIN_RAY_TOOL_MIN_CPUS): a task of no CPU takes no slot, so nothing would bound how many run")
    if ray.num_cpus > limits.max_cpus:
        return f"numCpus {ray.num_cpus:g} is over the limit of {limits.max_cpus:g} (KUBECHAIN_RAY_TOOL_MAX_CPUS)"
    if ray.num_gpus > limits.max_gpus:
        return f"numGpus {ray.num_gpus:g} is over the limit of {limits.max_gpus:g} (KUBECHAIN_RAY_TOOL_MAX_GPUS)"
    if ray.memory is not None and ray.memory > limits.max_memory:
        return f"memory {ray.memory} is over the limit of {limits.max_memory} bytes (KUBECHAIN_RAY_TOOL_MAX_MEMORY)"
    for name, amount in sorted(ray.resources.items()):
        allowed = limits.resources.get(name)
        if allowed is None:
            listed = ", ".join(sorted(limits.resources)) or "none"
            return (f"custom resource {name!r} is not one ray tools may reserve (KUBECHAIN_RAY_TOOL_RESOURCES: "
                    f"{listed})")
        if amount > allowed:
            return f"resource {name!r} {amount:g} is over the limit of {allowed:g} (KUBECHAIN_RAY_TOOL_RESOURCES)"
    return None


def tool_limits_problem(spec: ToolSpec, limits: RayToolLimits) -> str | None:
    return ray_tool_problem(spec.execution.ray, limits) if spec.execution.ray is not None else None


def max_priority(namespace_annotation: str | None, default: int) -> int:
    """A namespace's highest priority: its annotation kubechain.dev/max-priority (an integer), else the default."""
    try:
        return int(namespace_annotation) if namespace_annotation is not None else default
    except ValueError:
        return default


def priority_problem(priority: int, namespace: str, maximum: int, annotated: bool) -> str | None:
    """Why a Task's or TaskRun's priority is refused in `namespace`, or None."""
    if priority <= maximum:
        return None
    where = (f"the annotation {ANNOTATION_MAX_PRIORITY} of namespace {namespace!r}" if annotated
             else "KUBECHAIN_MAX_PRIORITY")
    return (f"spec.priority {priority} is over the highest priority namespace {namespace!r} may use, {maximum} "
            f"({where}; a cluster admin may raise it with the Namespace annotation {ANNOTATION_MAX_PRIORITY})")


def with_retention(spec: TaskRunSpec, ttl_seconds: int, context_seconds: int) -> TaskRunSpec:
    """The run's spec with the operator's retention defaults (KUBECHAIN_TTL_SECONDS_AFTER_FINISHED,
    KUBECHAIN_CONTEXT_RETENTION_SECONDS) where it sets none; 0 in either means keep."""
    update = {name: default for name, default in (("ttl_seconds_after_finished", ttl_seconds),
                                                  ("context_retention_seconds", context_seconds))
              if getattr(spec, name) is None}
    return spec.model_copy(update=update) if update else spec
