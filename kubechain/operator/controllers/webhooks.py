"""Admission: defaults for every kind and the validation rules of kubechain/admission.py, served by every replica's
webhook process (kubechain/operator/admission/), not by the reconciler: kopf's calling convention, our server.

Tools and ToolSets with a code tool (a ray tool, a stdio MCP server) are checked against their namespace's
code-tool rules (kubechain/operator/codetools.py: the settings and the Namespace's label, read fresh).

LLMs, Tools, ToolSets, Tasks and TaskRuns (contextStorageRef) may use only the Secrets and ServiceAccounts their author could use themselves
(kubechain/core/access.py): checked with SubjectAccessReviews for the request's user (operator/access.py).

Validation fails closed (failurePolicy Fail): a bad object is refused even when no replica answers (kubectl then
says it cannot reach the webhook; retry). Every replica serves them and none removes them when it stops, so nothing
is admitted unchecked during a rollout, and a restarting reconciler refuses nothing. Status writes - every checkpoint - are never
sent to the webhooks, so running actors are not slowed or blocked by them. Defaulting fails open
(Ignore): the CRD schema and the models carry the same defaults, so nothing depends on it; and it runs on
CREATE only: an update (kopf's own metadata writes, a wake, a cancel) would pay a webhook round trip to
change nothing, which in a burst of a thousand TaskRuns was most of the operator's admission work.
"""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.v1alpha1 import KINDS
from kubechain.core import access, admission
from kubechain.core.codetools import uses_code_tools
from kubechain.operator import codetools

from ..admission import hooks
from ..settings import current, ray_tool_limits
from .taskrun.indexes import priority_limit

from .catalog import IndexCatalog

WRITES = ["CREATE", "UPDATE"]


def refuse(problems: list[str]) -> None:
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


for _info in KINDS:
    def _defaults(spec: kopf.Spec, patch: kopf.Patch, _model: Any = _info.spec, **_: Any) -> None:
        """Write the effective defaults into the object, so `kubectl get -o yaml` shows them."""
        try:
            defaulted = _model.model_validate(dict(spec)).to_wire()
        except ValueError:
            return  # the validating webhook (or the schema) says what is wrong
        if any(dict(spec).get(k) != v for k, v in defaulted.items()):
            patch["spec"] = defaulted

    hooks.mutate(_info.plural, id=f"default-{_info.plural}", operations=["CREATE"], ignore_failures=True)(_defaults)


async def _borrowed(kind: str, namespace: str, spec: dict[str, Any], old: kopf.Body | None, operation: str,
                    userinfo: kopf.UserInfo, memo: kopf.Memo) -> list[str]:
    """The Secrets and ServiceAccounts the object names that the requesting user may not use themselves."""
    before = dict((old or {}).get("spec") or {}) if operation == "UPDATE" else None
    found = access.uses(kind, spec)
    if not found or not access.needs_check(operation, before, spec):
        return []
    return await memo.state.access.refusals(found, access.Author.from_userinfo(userinfo), namespace)


@hooks.validate("llms", id="validate-llms", operations=WRITES)
async def validate_llm(namespace: str, spec: kopf.Spec, old: kopf.Body | None, operation: str,
                       userinfo: kopf.UserInfo, memo: kopf.Memo, **_: Any) -> None:
    refuse(admission.llm(dict(spec)) or await _borrowed("LLM", namespace, dict(spec), old, operation, userinfo, memo))


async def _code_tool_policy(kind: str, namespace: str, spec: dict[str, Any], memo: kopf.Memo) -> CodeToolPolicy | None:
    """The namespace's code-tool rules when the object has a code tool (else no Namespace read is needed)."""
    if not uses_code_tools(kind, spec):
        return None
    return await codetools.policy(memo.state.kube, memo.state.settings.code_tools, namespace)


@hooks.validate("tools", id="validate-tools", operations=WRITES)
async def validate_tool(namespace: str, spec: kopf.Spec, old: kopf.Body | None, operation: str,
                        userinfo: kopf.UserInfo, memo: kopf.Memo, **_: Any) -> None:
    refuse(admission.tool(dict(spec), await _code_tool_policy("Tool", namespace, dict(spec), memo),
                          ray_tool_limits(current().limits))
           or await _borrowed("Tool", namespace, dict(spec), old, operation, userinfo, memo))


@hooks.validate("toolsets", id="validate-toolsets", operations=WRITES)
async def validate_toolset(namespace: str, spec: kopf.Spec, old: kopf.Body | None, operation: str,
                           userinfo: kopf.UserInfo, memo: kopf.Memo, **_: Any) -> None:
    refuse(admission.toolset(dict(spec), await _code_tool_policy("ToolSet", namespace, dict(spec), memo),
                             ray_tool_limits(current().limits))
           or await _borrowed("ToolSet", namespace, dict(spec), old, operation, userinfo, memo))


@hooks.validate("agents", id="validate-agents", operations=WRITES)
def validate_agent(namespace: str, name: str, spec: kopf.Spec, **kwargs: Any) -> None:
    refuse(admission.agent(namespace, name, dict(spec), IndexCatalog(kwargs)))


@hooks.validate("tasks", id="validate-tasks", operations=WRITES)
async def validate_task(namespace: str, new: kopf.Body, old: kopf.Body | None, operation: str,
                        userinfo: kopf.UserInfo, memo: kopf.Memo, **kwargs: Any) -> None:
    before = dict(old) if operation == "UPDATE" and old is not None else None
    problems = admission.task_update(before, dict(new)) if before is not None else []
    refuse(problems + admission.priority(dict(new), before, namespace, *priority_limit(namespace, kwargs, current().limits.max_priority))
           + admission.quota(dict(new), operation, _spent(namespace, kwargs))
           or await _borrowed("Task", namespace, dict(new.get("spec") or {}), old, operation, userinfo, memo))


@hooks.validate("taskruns", id="validate-taskruns", operations=WRITES)
async def validate_taskrun(namespace: str, new: kopf.Body, old: kopf.Body | None, operation: str,
                           userinfo: kopf.UserInfo, memo: kopf.Memo, **kwargs: Any) -> None:
    before = dict(old) if operation == "UPDATE" and old is not None else None

    def source(name: str) -> Any:  # a fork's source, as the operator's index shows it
        return next(iter(kwargs["fork_sources"].get((namespace, name)) or ()), None)

    refuse(admission.taskrun(dict(new), before, source)
           + admission.priority(dict(new), before, namespace, *priority_limit(namespace, kwargs, current().limits.max_priority))
           + admission.quota(dict(new), operation, _spent(namespace, kwargs))
           or await _borrowed("TaskRun", namespace, dict(new.get("spec") or {}), old, operation, userinfo, memo))


def _spent(namespace: str, indexes: dict[str, Any]) -> list[str]:
    """The messages of the namespace's spent RunQuotas (controllers/quota.py keeps them current)."""
    return [message for _, _, message in indexes["run_quotas"].get(namespace, []) if message]


@hooks.validate("taskschedules", id="validate-taskschedules", operations=WRITES)
async def validate_taskschedule(namespace: str, new: kopf.Body, old: kopf.Body | None, operation: str,
                                userinfo: kopf.UserInfo, memo: kopf.Memo, **kwargs: Any) -> None:
    before = dict(old) if operation == "UPDATE" and old is not None else None
    refuse(admission.schedule(dict(new), before, namespace,
                              *priority_limit(namespace, kwargs, current().limits.max_priority))
           or await _borrowed("TaskSchedule", namespace, dict(new.get("spec") or {}), old, operation, userinfo, memo))
