"""What the CLI (and any other client) does to answer, approve, reject or cancel a TaskRun.

Every action is one merge patch of the TaskRun's spec - the same `kubectl patch` the README shows - after
checking, against the run's status, that it will be accepted: a reply for a call that does not wait,
of the wrong kind, or a second different reply, is refused here with a clear message and nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubechain.api.v1alpha1 import GROUP, VERSION, CallState, HumanResponse, Phase, TaskRunSpec, TaskRunStatus, WaitingFor


class Refused(Exception):
    """The reply would not be accepted; nothing was written."""


@dataclass(frozen=True)
class Reply:
    kind: WaitingFor  # ANSWER or APPROVAL
    response: HumanResponse


def response_patch(obj: dict[str, Any], reply: Reply, call: str | None = None) -> tuple[str, dict[str, Any]]:
    """(call key, merge patch) that records `reply` for the waiting call `call` (its key, or the LLM's call id of
    a waiting call; None: the only call waiting for this kind of reply). Replies are keyed by the call's key
    (ToolCallRecord.key): an LLM's call ids may repeat across steps, and calls that wait are all of one step."""
    name = obj["metadata"]["name"]
    status = TaskRunStatus.model_validate(obj.get("status") or {})
    spec = TaskRunSpec.model_validate(obj["spec"])
    if status.phase is not Phase.PAUSED_FOR_USER_INPUT:
        raise Refused(f"TaskRun {name} is {status.phase.value}, not waiting for a human")
    waiting = [r for r in status.tool_call_history if r.state is CallState.WAITING and r.waiting_for is reply.kind]
    what = "an answer" if reply.kind is WaitingFor.ANSWER else "approval"
    if call is None:
        if len(waiting) != 1:
            listed = ", ".join(f"{r.id} ({r.question})" for r in waiting) or "none"
            raise Refused(f"TaskRun {name} has {len(waiting)} calls waiting for {what}: {listed}; choose one with --call")
        record = waiting[0]
    else:
        record = next((r for r in waiting if call in (r.key, r.id)), None)
        if record is None:
            others = ", ".join(r.id for r in waiting) or "none"
            raise Refused(f"call {call} of TaskRun {name} is not waiting for {what} (waiting: {others})")
    key = record.key
    if key in spec.responses and spec.responses[key] != reply.response:
        raise Refused(f"call {record.id} of TaskRun {name} was already answered: {spec.responses[key].to_wire()}")
    return key, {"spec": {"responses": {key: reply.response.model_dump(mode="json", by_alias=True, exclude_defaults=True)}}}


CANCEL_PATCH = {"spec": {"cancel": True}}


def send_reply(api: Any, namespace: str, name: str, reply: Reply, call: str | None = None) -> str:
    """Read the run, check the reply (`Refused`) and write it with `api` (a kubernetes `CustomObjectsApi` holding
    the caller's credentials, so the apiserver's RBAC decides); returns the call's key. The CLI and the web
    console both reply through here."""
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", name)
    key, patch = response_patch(obj, reply, call)
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", name, patch)
    return key


def send_cancel(api: Any, namespace: str, name: str) -> None:
    """Cancel a run (and its child runs) with `api`, as `kubechain cancel` does."""
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", name, CANCEL_PATCH)
