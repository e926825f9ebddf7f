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
    """What the apiserver stores: nulls are removed (merge patch deletes them, schemas prune them, after a JSON
    patch too: measured on the local apiserver)."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


def json_patched(status, ops, version):
    """`status` after a JSON patch (RFC 6902: add, replace, remove), strictly: a path that is not there fails,
    and so does a resourceVersion other than the object's (as the apiserver refuses a stale one, 409)."""
    status = json.loads(json.dumps(status))
    for op in ops:
        if op["path"] == "/metadata/resourceVersion":
            if op["value"] != version:
                raise LookupError("the object has been modified")
            continue
        *parents, last = op["path"].removeprefix("/status/").split("/")
        target = status
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            if op["op"] == "add" and last == "-":
                target.append(op["value"])
            else:
                target[int(last)]  # there, or IndexError
                target[int(last)] = op["value"]
        elif op["op"] == "remove":
            del target[last]
        else:
            if op["op"] == "replace":
                target[last]  # there, or KeyError
            target[last] = op["value"]
    return status


class MemoryREST:
    """Just enough of the apiserver: the TaskRun status (merge or JSON patch, resourceVersion) and ConfigMaps."""

    def __init__(self):
        self.status, self.version, self.configmaps, self.patch_bytes, self.posts = {"epoch": 1}, 1, {}, [], 0
        self.kinds = []  # the content type of each status write
        self.requests = []  # (method, "status" or "configmap") of each request

    async def send(self, method, path, body=None, content_type=None):
        self.requests.append((method, "status" if path.endswith("/status") else "configmap"))
        if path.endswith("/status"):
            if method == "PATCH":
                encoded = body if isinstance(body, bytes) else json.dumps(body).encode()  # fail() sends a dict
                self.patch_bytes.append(len(encoded))
                self.kinds.append(content_type)
                decoded = json.loads(encoded)
                if content_type == "application/json-patch+json":
                    try:
                        self.status = pruned(json_patched(self.status, decoded, str(self.version)))
                    except LookupError as exc:
                        return 409, {"message": str(exc)}
                else:
                    self.status = pruned({**self.status, **decoded["status"]})
                self.version += 1
            return 200, {"metadata": {"uid": REF.uid, "resourceVersion": str(self.version)}, "status": self.status}
        if method == "POST":
            name = body["metadata"]["name"]
            if name in self.configmaps:
                return 409, {"message": "already exists"}
            self.configmaps[name] = self._stored(body)
            self.posts += 1
            return 201, body
        name = path.rsplit("/", 1)[1]
        if method == "PUT":
            if body["metadata"].get("resourceVersion") not in (None, self.configmaps[name]["metadata"]["resourceVersion"]):
                return 409, {"message": "the object has been modified"}
            self.configmaps[name] = self._stored(body)
        if name in self.configmaps:
            return 200, self.configmaps[name]
        return 404, {"kind": "Status", "reason": "NotFound", "message": f"configmaps {name!r} not found"}

    def _stored(self, body):
        self.version += 1
        return {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}


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


def sealed_run(steps: int = 12) -> tuple[MemoryREST, TaskRunStatus]:
    rest = MemoryREST()
    store = KubeCheckpointStore(REF, epoch=1, rest=rest)
    status = asyncio.run(store.load()).model_copy(update={"phase": Phase.RUNNING})
    for step in range(1, steps + 1):
        grow(status, step)
        asyncio.run(store.save(status))
    assert rest.status["sealedContext"]["chunks"] >= 2 and len(rest.status["sealedContext"]["sha256"]) == 64
    return rest, status


def load(rest, epoch: int = 1):
    return asyncio.run(KubeCheckpointStore(REF, epoch=epoch, rest=rest).load())


def test_a_missing_rewritten_or_corrupt_chunk_is_checkpoint_corrupt_naming_it():
    import pytest

    from actors.checkpoint import CheckpointCorrupt
    from kubechain.api.context import configmaps, decode, describe, described, encode

    rest, status = sealed_run()
    assert digest(load(rest)) == digest(status)
    part = "big-ctx-0001-0"
    saved = rest.configmaps.pop(part)
    with pytest.raises(CheckpointCorrupt, match="sealed chunk big-ctx-0001-0 \\(chunk 1\\) is missing"):
        load(rest)
    rest.configmaps[part] = {**saved, "data": {"chunk.json": saved["data"]["chunk.json"].replace("x", "y", 1)}}
    with pytest.raises(CheckpointCorrupt, match="big-ctx-0001-0 \\(chunk 1\\) is corrupt: .*checksum"):
        load(rest)
    # Rewritten with a description of its own that matches it: only the chain in status tells.
    messages, calls = decode(described(saved), [saved["data"]["chunk.json"]])
    text = encode(messages[:-1], calls)
    chunk = describe("big-ctx-0001", text, len(messages) - 1, len(calls), epoch=1)
    rest.configmaps[part] = configmaps("big", REF.uid, chunk, text)[0]
    with pytest.raises(CheckpointCorrupt, match="do not match status.sealedContext.sha256"):
        load(rest)


def test_chunk_writes_never_replace_a_newer_epochs_and_replace_an_older_leftover():
    import pytest

    from actors.checkpoint import Fenced
    from kubechain.api.context import EPOCH_ANNOTATION

    rest, status = sealed_run(4)
    index = rest.status["sealedContext"]["chunks"]
    # epoch 1 crashed after writing its next chunk, before the status that references it
    leftover = KubeCheckpointStore(REF, epoch=1, rest=rest)
    asyncio.run(leftover.load())
    for step in range(5, 40):
        grow(status, step)
        if seal := leftover.layout.plan(status):
            asyncio.run(leftover._write_chunk(seal))
            break
    name = f"big-ctx-{index:04d}-0"
    assert rest.configmaps[name]["metadata"]["annotations"][EPOCH_ANNOTATION] == "1"
    rest.status["epoch"] = 2
    live = KubeCheckpointStore(REF, epoch=2, rest=rest)
    restored = asyncio.run(live.load()).model_copy(update={"phase": Phase.RUNNING})
    for step in range(5, 40):  # the live actor goes its own way (different results)
        grow(restored, step)
        restored.context_window[-1].content = f"epoch 2, step {step}"
        asyncio.run(live.save(restored))
    assert rest.configmaps[name]["metadata"]["annotations"][EPOCH_ANNOTATION] == "2"  # the leftover was replaced
    assert digest(load(rest, epoch=2)) == digest(restored)
    # The stale actor comes back and seals over the live one's chunk: fenced, nothing written.
    before = json.dumps(rest.configmaps, sort_keys=True)
    with pytest.raises(Fenced, match="written at epoch 2"):
        asyncio.run(leftover._write_chunk(seal))
    assert json.dumps(rest.configmaps, sort_keys=True) == before


def test_failing_a_corrupt_run_writes_the_phase_and_leaves_the_conversation_alone():
    rest, status = sealed_run()
    tail = json.dumps(rest.status["contextWindow"])
    asyncio.run(KubeCheckpointStore(REF, epoch=1, rest=rest).fail("CheckpointCorrupt", "chunk 1 is missing"))
    assert rest.status["phase"] == "Failed" and rest.status["error"] == "chunk 1 is missing"
    assert rest.status["phaseHistory"][-1]["reason"] == "CheckpointCorrupt"
    assert json.dumps(rest.status["contextWindow"]) == tail
