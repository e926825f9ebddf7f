"""The full conversation of a TaskRun: its sealed context chunks followed by the tail in its status.

Who may read what: the TaskRun is read with the reader's own credentials (who may not `get` it sees nothing), and
its chunks by the run's uid from where the status says they are. ConfigMaps: with the same credentials. An external
store (sealedContext.store): its DSN Secret is read with `secrets`' credentials - `kubechain transcript` passes
the user's own (they need `get` on the TaskRun and on that Secret, as anyone using the database directly would);
the console passes its own account, but only after the user's token read the TaskRun (so the rows it shows are
those of a run the user may get), since tenants usually may not read the operator's default store's Secret.
"""
from __future__ import annotations

import json
import textwrap

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubechain.api.context import COMPACTION_MARKER, DATA_KEY, decode, described, part_name
from kubechain.api.v1alpha1 import GROUP, VERSION, Message, StoreLocation, TaskRunStatus, ToolCallRecord
from kubechain.runtime import contextdb
from kubechain.core.livestream import call_text


def load(namespace: str, name: str, api_client: client.ApiClient | None = None
         ) -> tuple[TaskRunStatus, list[Message], list[ToolCallRecord]]:
    """The run's status and whole conversation, read with `api_client`'s credentials (default: the kubeconfig's)."""
    if api_client is None:
        config.load_config()
    obj = client.CustomObjectsApi(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns", name)
    return complete(obj, api_client)


def complete(obj: dict, api_client: client.ApiClient | None = None, secrets: client.ApiClient | None = None
             ) -> tuple[TaskRunStatus, list[Message], list[ToolCallRecord]]:
    """A TaskRun object's status, with its sealed chunks read back in front of the tail. A chunk gone while it
    is read is retention dropping them (the status says so first): the run is read again and shown without."""
    try:
        return _with_chunks(obj, api_client, secrets)
    except ApiException as exc:
        if exc.status != 404:
            raise
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        again = client.CustomObjectsApi(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                 "taskruns", name)
        if not ((again.get("status") or {}).get("sealedContext") or {}).get("droppedAt"):
            raise
        return _with_chunks(again, api_client, secrets)


def _with_chunks(obj: dict, api_client: client.ApiClient | None, secrets: client.ApiClient | None = None
                 ) -> tuple[TaskRunStatus, list[Message], list[ToolCallRecord]]:
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    status = TaskRunStatus.model_validate(obj.get("status") or {})
    core = client.CoreV1Api(api_client)
    messages: list[Message] = []
    calls: list[ToolCallRecord] = []
    chunks = 0 if status.sealed_context.dropped_at else status.sealed_context.chunks  # dropped: only the tail is left
    if status.sealed_context.store is not None and chunks:
        dsn = store_dsn(status.sealed_context.store, secrets or api_client)
        for chunk_messages, chunk_calls, _ in contextdb.read_chunks(dsn, obj["metadata"]["uid"], chunks):
            messages += chunk_messages
            calls += chunk_calls
        chunks = 0
    for index in range(chunks):
        part0 = core.read_namespaced_config_map(part_name(name, index, 0), namespace)
        chunk = described({"metadata": {"annotations": part0.metadata.annotations}})
        parts = [part0.data[DATA_KEY]] + [core.read_namespaced_config_map(part_name(name, index, i), namespace)
                                          .data[DATA_KEY] for i in range(1, chunk.parts)]
        chunk_messages, chunk_calls = decode(chunk, parts)
        messages += chunk_messages
        calls += chunk_calls
    return status, messages + status.context_window, calls + status.tool_call_history


def store_dsn(where: StoreLocation, api_client: client.ApiClient | None) -> str:
    """The store's DSN from its Secret, read with `api_client`'s rights (a 403 is the reader's answer)."""
    import base64

    secret = client.CoreV1Api(api_client).read_namespaced_secret(where.secret, where.namespace)
    value = (secret.data or {}).get(where.key)
    if value is None:
        raise ValueError(f"Secret {where.namespace}/{where.secret} has no key {where.key!r} (the context store's DSN)")
    return base64.b64decode(value).decode()


def render_message(message: Message, width: int = 100, full: bool = False) -> str:
    """One message as a line (`full`: never shortened; what `follow` prints, the live preview's final form)."""
    if message.role == "system" and message.name == COMPACTION_MARKER:  # what the model saw changed here
        return f"── {message.content} ──"
    text = message.content or ""
    for call in message.tool_calls or []:
        text += call_text(call.function.name, call.function.arguments, call.id)
    return (textwrap.shorten(f"[{message.role}] {text}", width=width * 4, placeholder=" …")
            if len(text) > width * 4 and not full else f"[{message.role}] {text}")


def dropped(status: TaskRunStatus) -> str | None:
    """What retention dropped of the conversation (contextRetentionSeconds), or None."""
    sealed = status.sealed_context
    if not sealed.dropped_at:
        return None
    return (f"{sealed.messages} earlier messages and {sealed.tool_calls} tool calls ({sealed.chunks} sealed chunks, "
            f"{sealed.bytes} bytes) were dropped at {sealed.dropped_at} (contextRetentionSeconds); the tail follows")


def render(status: TaskRunStatus, messages: list[Message], width: int = 100) -> str:
    lines = [f"── {note} ──" for note in [dropped(status)] if note]
    lines += [render_message(m, width) for m in messages]
    lines.append(f"-- {status.phase.value}, {status.step} steps, {status.usage.total_tokens} tokens, "
                 f"{len(messages)} messages ({status.sealed_context.chunks} sealed chunks)")
    return "\n".join(lines)


def as_json(messages: list[Message]) -> str:
    return json.dumps([m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in messages], indent=1)
