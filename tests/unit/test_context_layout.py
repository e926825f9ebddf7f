"""Out-of-line contexts: a 5 MB, 2,000-message run checkpointed through an in-memory apiserver."""
import asyncio
import hashlib
import json

from actors.checkpoint import KubeCheckpointStore
from actors.layout import SEAL_BYTES
from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import CallState, FunctionCall, Message, Phase, TaskRunStatus, ToolCall, ToolCallRecord

REF = TaskRunRef(namespace="ns", name="big", uid="uid-1")


def pruned(value):
    """What the apiserver stores: nulls are removed (merge patch deletes them, schemas prune them)."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


class MemoryREST:
    """Just enough of the apiserver: the TaskRun status (merge patch, resourceVersion) and ConfigMaps."""

    def __init__(self):
        self.status, self.version, self.configmaps, self.patch_bytes, self.posts = {"epoch": 1}, 1, {}, [], 0

    async def send(self, method, path, body=None, content_type=None):
        if path.endswith("/status"):
            if method == "PATCH":
                self.patch_bytes.append(len(json.dumps(body)))
                self.status = pruned({**self.status, **body["status"]})
                self.version += 1
            return 200, {"metadata": {"uid": REF.uid, "resourceVersion": str(self.version)}, "status": self.status}
        if method == "POST":
            name = body["metadata"]["name"]
            if name in self.configmaps:
                return 409, {"message": "already exists"}
            self.configmaps[name] = body
            self.posts += 1
            return 201, body
        name = path.rsplit("/", 1)[1]
        if method == "PUT":
            self.configmaps[name] = body
        return (200, self.configmaps[name]) if name in self.configmaps else (404, {"message": "not found"})


def digest(status: TaskRunStatus) -> str:
    wire = [m.to_wire() for m in status.context_window] + [c.to_wire() for c in status.tool_call_history]
    return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()


def grow(status: TaskRunStatus, step: int) -> None:
    """One step: an assistant tool call and a 5 KB tool result (1,000 steps ≈ 5 MB, 2,000 messages)."""
    call = ToolCall(id=f"c{step}", function=FunctionCall(name="echo", arguments=json.dumps({"i": step})))
    status.context_window.append(Message(role="assistant", tool_calls=[call]))
    status.context_window.append(Message(role="tool", tool_call_id=f"c{step}", content=f"{step}:" + "x" * 5000))
    status.tool_call_history.append(ToolCallRecord(id=f"c{step}", step=step, tool="echo", arguments="{}",
                                                   state=CallState.SUCCEEDED, result="y" * 3000))
    status.step = step


def test_a_5mb_run_is_restored_exactly_and_each_write_stays_small():
    rest = MemoryREST()
    store = KubeCheckpointStore(REF, epoch=1, rest=rest)
    status = asyncio.run(store.load()).model_copy(update={"phase": Phase.RUNNING})
    for step in range(1, 1001):
        grow(status, step)
        asyncio.run(store.save(status))
    assert len(status.context_window) == 2000
    assert sum(len(m.content or "") for m in status.context_window) > 5_000_000

    restored = asyncio.run(KubeCheckpointStore(REF, epoch=1, rest=rest).load())
    assert digest(restored) == digest(status)
    assert restored.step == 1000 and len(rest.status["contextWindow"]) <= 64
    # Bytes per step are bounded by the tail, not the conversation: the last write is as small as an early one.
    assert max(rest.patch_bytes) < 2 * SEAL_BYTES
    assert rest.patch_bytes[-1] < 2 * SEAL_BYTES
    # Every sealed message is written once; the status only counts them.
    sealed = rest.status["sealedContext"]
    assert sealed["messages"] + len(rest.status["contextWindow"]) == 2000
    assert len(rest.configmaps) >= sealed["chunks"] > 0
    assert rest.posts == len(rest.configmaps)  # no chunk was written twice


def test_open_tool_calls_stay_in_the_status_journal():
    rest = MemoryREST()
    store = KubeCheckpointStore(REF, epoch=1, rest=rest)
    status = asyncio.run(store.load()).model_copy(update={"phase": Phase.RUNNING})
    for step in range(1, 40):
        grow(status, step)
    status.tool_call_history[5].state = CallState.STARTED  # an old call still open
    asyncio.run(store.save(status))
    ids = [c["id"] for c in rest.status["toolCallHistory"]]
    assert "c6" in ids and ids[0] == "c6"  # nothing at or after the open call was sealed away
    assert digest(asyncio.run(KubeCheckpointStore(REF, epoch=1, rest=rest).load())) == digest(status)


def test_a_call_is_written_as_it_is_now_after_it_finishes():
    """Wire forms are cached only once a call has finished: a Started call's later outcome is what gets written."""
    rest = MemoryREST()
    store = KubeCheckpointStore(REF, epoch=1, rest=rest)
    status = asyncio.run(store.load()).model_copy(update={"phase": Phase.RUNNING})
    grow(status, 1)
    record = status.tool_call_history[0]
    record.state, record.result = CallState.STARTED, None
    asyncio.run(store.save(status))
    assert rest.status["toolCallHistory"][0]["state"] == "Started"
    record.state, record.result = CallState.SUCCEEDED, "done"
    asyncio.run(store.save(status))
    assert rest.status["toolCallHistory"][0]["state"] == "Succeeded"
    assert rest.status["toolCallHistory"][0]["result"] == "done"
