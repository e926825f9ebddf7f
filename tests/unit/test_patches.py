"""Checkpoint writes carry what changed (actors/patches.py): a JSON patch over the store's last write, or the whole
of the actor's fields as a merge patch when that base is not known to be what the object holds."""
import asyncio
import json

import pytest

from actors.checkpoint import KubeCheckpointStore
from actors.patches import JSON_PATCH, MERGE_PATCH, NULL, Fields, body
from kubechain.api.v1alpha1 import CallState, FunctionCall, Message, Phase, ToolCall, ToolCallRecord

from .test_context_layout import REF, MemoryREST, digest

BASE = Fields({"step": "1", "llmRetry": NULL, "usage": '{"totalTokens":3}'}, (0, 0), ['{"role":"user"}'],
              ['{"id":"c1","state":"Started"}'])


def ops(fields, base=BASE):
    payload, kind = body("uid-1", "7", fields, base)
    return json.loads(payload) if kind == JSON_PATCH else kind


@pytest.mark.parametrize("change, expected", [
    ({}, [{"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}]),
    ({"small": {**BASE.small, "step": "2"}}, [{"op": "add", "path": "/status/step", "value": 2}]),
    ({"small": {**BASE.small, "llmRetry": '{"attempts":1}'}}, [{"op": "add", "path": "/status/llmRetry",
                                                                "value": {"attempts": 1}}]),
    ({"small": {**BASE.small, "usage": NULL}}, [{"op": "remove", "path": "/status/usage"}]),
    ({"messages": BASE.messages + ['{"role":"tool"}']}, [{"op": "add", "path": "/status/contextWindow/-",
                                                          "value": {"role": "tool"}}]),
    ({"calls": ['{"id":"c1","state":"Succeeded"}', '{"id":"c2"}']},
     [{"op": "replace", "path": "/status/toolCallHistory/0", "value": {"id": "c1", "state": "Succeeded"}},
      {"op": "add", "path": "/status/toolCallHistory/-", "value": {"id": "c2"}}]),
], ids=["nothing", "counter", "field-set", "field-removed", "message-appended", "call-finished-and-added"])
def test_a_delta_is_the_precondition_and_the_ops_of_what_changed(change, expected):
    fields = Fields(**{"small": BASE.small, "start": BASE.start, "messages": BASE.messages, "calls": BASE.calls,
                       **change})
    got = ops(fields)
    assert got[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}
    assert got[1:] == [e for e in expected if e["path"] != "/metadata/resourceVersion"]


@pytest.mark.parametrize("fields", [
    Fields(BASE.small, (2, 1), BASE.messages, BASE.calls),  # sealed since: the tail starts elsewhere
    Fields({**BASE.small, "actor": NULL}, (0, 0), BASE.messages, BASE.calls),  # a field this store never wrote
    Fields(BASE.small, (0, 0), ['{"role":"system"}'], BASE.calls),  # a written message changed
    Fields(BASE.small, (0, 0), BASE.messages, []),  # the journal's tail shrank
], ids=["sealed", "unwritten-field", "message-changed", "calls-shrank"])
def test_a_write_whose_base_is_not_known_to_hold_is_a_whole_merge_patch(fields):
    assert ops(fields) == MERGE_PATCH
    payload, _ = body("uid-1", "7", fields, BASE)
    whole = json.loads(payload)
    assert whole["metadata"] == {"uid": "uid-1", "resourceVersion": "7"}
    assert len(whole["status"]["contextWindow"]) == len(fields.messages) and "toolCallHistory" in whole["status"]
    assert ops(fields, None) == MERGE_PATCH  # nothing written since the store read the object


def small_step(status, step):
    """One step of small messages: an assistant tool call and a short result, its call written Started."""
    call = ToolCall(id=f"c{step}", function=FunctionCall(name="echo", arguments=json.dumps({"i": step})))
    status.context_window += [Message(role="assistant", tool_calls=[call]),
                              Message(role="tool", tool_call_id=f"c{step}", content=f"result {step}")]
    status.tool_call_history.append(ToolCallRecord(id=f"c{step}", step=step, tool="echo", arguments="{}",
                                                   state=CallState.STARTED))
    status.step = step


def test_steps_are_written_as_deltas_and_the_object_holds_what_a_whole_write_would():
    rest, whole = MemoryREST(), MemoryREST()
    store = KubeCheckpointStore(REF, epoch=1, rest=rest)
    status = asyncio.run(store.load()).model_copy(update={"phase": Phase.RUNNING})

    def save():
        asyncio.run(store.save(status))
        fresh = KubeCheckpointStore(REF, epoch=1, rest=whole)  # a new store: its first write is whole
        asyncio.run(fresh.load())
        asyncio.run(fresh.save(status))
        assert rest.status == whole.status

    for step in range(1, 60):
        small_step(status, step)
        save()  # written ahead
        status.tool_call_history[-1].state, status.tool_call_history[-1].result = CallState.SUCCEEDED, "ok"
        status.usage.total_tokens += 10
        save()  # the results: the call replaced in the journal
    assert whole.status["sealedContext"]["chunks"] > 2  # sealed on the way
    # No read after the first: each save is its status PATCH (and a seal's ConfigMap POST), nothing else.
    assert rest.requests[0] == ("GET", "status") and ("GET", "status") not in rest.requests[1:]
    assert {r for r in rest.requests[1:]} == {("PATCH", "status"), ("POST", "configmap")}
    assert rest.requests.count(("PATCH", "status")) == 2 * 59
    assert rest.kinds[0] == MERGE_PATCH and rest.kinds.count(JSON_PATCH) > len(rest.kinds) * 0.8
    # A delta carries the step's new entries; a whole write, the tail (up to SEAL_BYTES).
    delta = [n for n, kind in zip(rest.patch_bytes, rest.kinds) if kind == JSON_PATCH]
    merge = [n for n, kind in zip(rest.patch_bytes[1:], rest.kinds[1:]) if kind == MERGE_PATCH]
    assert merge and max(delta) < 600 < min(merge)  # after each seal (the tail moved) one whole write
    assert digest(asyncio.run(KubeCheckpointStore(REF, epoch=1, rest=rest).load())) == digest(status)


def test_after_a_write_by_someone_else_the_next_write_is_whole_over_what_was_read():
    rest = MemoryREST()
    store = KubeCheckpointStore(REF, epoch=1, rest=rest)
    status = asyncio.run(store.load()).model_copy(update={"phase": Phase.RUNNING})
    small_step(status, 1)
    asyncio.run(store.save(status))
    rest.status, rest.version = {**rest.status, "conditions": [{"type": "RayAvailable", "status": "True"}]}, rest.version + 1
    small_step(status, 2)
    asyncio.run(store.save(status))  # the delta meets a newer resourceVersion: 409, read, write whole
    assert rest.kinds == [MERGE_PATCH, JSON_PATCH, MERGE_PATCH]
    assert rest.status["conditions"] == [{"type": "RayAvailable", "status": "True"}] and rest.status["step"] == 2
    small_step(status, 3)
    asyncio.run(store.save(status))
    assert rest.kinds[-1] == JSON_PATCH and len(rest.status["contextWindow"]) == 6
