"""The JSON the console's page shows, shaped from kubechain objects (pure functions).

Only named fields leave the server: never a whole spec (an LLM's spec names its Secret; no Secret value is
ever read), never HTML. Every string here is untrusted text for the page, which puts it in the DOM as text.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from kubechain.api.v1alpha1 import CallState, Message, Phase, TaskRunSpec, TaskRunStatus, ToolCallRecord, WaitingFor
from kubechain.core.naming import LABEL_PARENT_UID

Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    return {"namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
            "created": meta.get("creationTimestamp", "")}


def agent_row(obj: Obj) -> Obj:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {**_meta(obj), "ready": bool(status.get("ready")), "message": status.get("message", ""),
            "llm": (spec.get("llmRef") or {}).get("name", ""), "tools": list(status.get("tools") or [])}


def task_row(obj: Obj) -> Obj:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {**_meta(obj), "agent": (spec.get("agentRef") or {}).get("name", ""), "phase": status.get("phase", ""),
            "run": status.get("taskRunName", ""), "message": status.get("message", "")}


def taskrun_row(obj: Obj) -> Obj:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    waiting = [c for c in status.get("toolCallHistory") or [] if status.get("phase") == Phase.PAUSED_FOR_USER_INPUT.value
               and c.get("state") == CallState.WAITING.value and c.get("waitingFor") in ("Answer", "Approval")]
    return {**_meta(obj), "agent": status.get("agent", ""), "phase": status.get("phase", "Pending"),
            "step": status.get("step", 0), "tokens": (status.get("usage") or {}).get("totalTokens", 0),
            "parent": (spec.get("parent") or {}).get("name", ""), "message": status.get("message", ""),
            "waiting": len(waiting)}


ROWS = {"agents": agent_row, "tasks": task_row, "taskruns": taskrun_row}


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or None."""
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return parts[1]
    return None


def links(status: TaskRunStatus, ray_dashboard_url: str | None, tracing_url: str | None) -> Obj:
    """The run's actor in the Ray dashboard (by actor id when known, else the actors list) and its trace."""
    out: Obj = {"ray": None, "trace": None}
    if ray_dashboard_url and status.actor:
        base = ray_dashboard_url.rstrip("/")
        out["ray"] = f"{base}/#/actors/{quote(status.actor.id)}" if status.actor.id else f"{base}/#/actors"
    tid = trace_id(status.traceparent)
    if tracing_url and tid:
        out["trace"] = tracing_url.replace("{trace_id}", tid) if "{trace_id}" in tracing_url \
            else f"{tracing_url.rstrip('/')}/{tid}"
    return out


def child_tree(obj: Obj, runs: list[Obj], depth: int = 0) -> list[Obj]:
    """The runs delegated from `obj` (label kubechain.dev/parent-uid), and theirs, as a tree."""
    uid = obj["metadata"].get("uid")
    children = sorted((r for r in runs if uid and (r["metadata"].get("labels") or {}).get(LABEL_PARENT_UID) == uid),
                      key=lambda r: r["metadata"].get("creationTimestamp", ""))
    return [{**taskrun_row(r), "children": child_tree(r, runs, depth + 1) if depth < 20 else []} for r in children]


def message_view(message: Message) -> Obj:
    return {"role": message.role, "content": message.content, "name": message.name,
            "toolCallId": message.tool_call_id,
            "toolCalls": [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                          for c in message.tool_calls or []]}


def call_view(call: ToolCallRecord) -> Obj:
    return {"id": call.id, "key": call.key, "step": call.step, "tool": call.tool, "arguments": call.arguments,
            "state": call.state.value, "attempts": call.attempts, "result": call.result, "error": call.error,
            "waitingFor": call.waiting_for.value if call.waiting_for else None, "question": call.question,
            "expiresAt": call.expires_at, "childRun": call.child_run, "delegatedTo": call.delegated_to,
            "response": call.response.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            if call.response else None}


def taskrun_detail(obj: Obj, messages: list[Message], calls: list[ToolCallRecord], runs: list[Obj],
                   ray_dashboard_url: str | None = None, tracing_url: str | None = None) -> Obj:
    """Everything the run's page shows: the whole transcript, the tool journal, phases, children, links."""
    status = TaskRunStatus.model_validate(obj.get("status") or {})
    spec = TaskRunSpec.model_validate(obj["spec"])
    return {
        **taskrun_row(obj),
        "uid": obj["metadata"].get("uid", ""),
        "task": spec.task_ref.name if spec.task_ref else None,
        "userInput": spec.user_input, "cancel": spec.cancel,
        "limits": {"maxTurns": spec.max_turns, "timeoutSeconds": spec.timeout_seconds},
        "output": status.output, "error": status.error,
        "usage": status.usage.model_dump(mode="json", by_alias=True),
        "treeUsage": status.tree_usage.model_dump(mode="json", by_alias=True),
        "cost": status.cost, "treeCost": status.tree_cost, "currency": status.currency,
        "traceId": trace_id(status.traceparent),
        "actor": status.actor.model_dump(mode="json", by_alias=True) if status.actor else None,
        "links": links(status, ray_dashboard_url, tracing_url),
        "phaseHistory": [t.model_dump(mode="json", by_alias=True) for t in status.phase_history],
        "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in status.conditions],
        "sealed": status.sealed_context.model_dump(mode="json", by_alias=True),
        "transcript": [message_view(m) for m in messages],
        "calls": [call_view(c) for c in calls],
        "waiting": [call_view(c) for c in calls if status.phase is Phase.PAUSED_FOR_USER_INPUT  # else: nobody asks
                    and c.state is CallState.WAITING and c.waiting_for in (WaitingFor.ANSWER, WaitingFor.APPROVAL)],
        "children": child_tree(obj, runs),
    }
