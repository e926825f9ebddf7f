"""The storage cap: what a run keeps in the apiserver, how the namespace's runs reserve their allowances, and the
actor refusing a checkpoint past its allowance before anything of it is written."""
import asyncio
import json

import pytest

from actors.checkpoint import KubeCheckpointStore, StorageQuotaExceeded
from kubechain.api.v1alpha1 import Phase
from kubechain.core.storage import CHUNK_OVERHEAD, Held, allowance, cap_of, reserved, room, stored_bytes

from .test_context_layout import REF, MemoryREST, grow


def test_a_run_holds_its_status_and_its_chunks_until_they_are_dropped():
    status = {"phase": "Completed", "sealedContext": {"chunks": 3, "bytes": 30_000}}
    tail = len(json.dumps(status, separators=(",", ":")))
    assert stored_bytes(status) == tail + 30_000 + 3 * CHUNK_OVERHEAD
    status["sealedContext"]["droppedAt"] = "2026-12-01T12:00:00Z"
    assert stored_bytes(status) == len(json.dumps(status, separators=(",", ":")))


@pytest.mark.parametrize("annotation, default, cap", [
    pytest.param("50000", 1 << 30, (50000, "annotation kubechain.dev/max-stored-bytes"), id="annotated"),
    pytest.param(None, 1 << 30, (1 << 30, "KUBECHAIN_MAX_NAMESPACE_STORED_BYTES"), id="default"),
    pytest.param("lots", 0, (0, "KUBECHAIN_MAX_NAMESPACE_STORED_BYTES"), id="not a number: the default, none"),
])
def test_a_namespaces_cap(annotation, default, cap):
    assert cap_of(annotation, default) == cap


@pytest.mark.parametrize("cap, run_bytes, each", [(100, 16, 16), (10, 16, 10), (0, 16, 16), (100, 0, 100)])
def test_a_runs_allowance_is_at_most_the_cap(cap, run_bytes, each):
    assert allowance(cap, run_bytes) == each


@pytest.mark.parametrize("runs, admitted, fits", [
    pytest.param([], 0, 10, id="empty namespace: cap / allowance runs"),
    pytest.param([Held("a", 5, True)], 0, 9, id="a started run reserves its allowance, not what it holds"),
    pytest.param([Held("a", 12, True)], 0, 8, id="... or what it holds, if more (its final write)"),
    pytest.param([Held("a", 25, False)], 0, 7, id="an ended (or queued) run counts what it holds"),
    pytest.param([Held("a", 5, True)], 2, 7, id="admitted runs not seen started reserve theirs too"),
    pytest.param([Held("a", 95, False)], 0, 0, id="full: none starts"),
])
def test_room_under_the_cap(runs, admitted, fits):
    assert room(100, reserved(runs, 10, admitted), 10) == fits
    assert room(0, reserved(runs, 10, admitted), 10) is None  # no cap


def test_the_actor_refuses_a_checkpoint_past_its_allowance_before_writing_anything():
    rest = MemoryREST()
    store = KubeCheckpointStore(REF, epoch=1, rest=rest, allowance=(60_000, "the storage cap of namespace ns"))
    status = asyncio.run(store.load()).model_copy(update={"phase": Phase.RUNNING})
    step = 0
    with pytest.raises(StorageQuotaExceeded) as refused:
        while True:
            step += 1
            grow(status, step)  # ~13 KB a step
            asyncio.run(store.save(status))
    assert "over its allowance of 60000 bytes (the storage cap of namespace ns)" in str(refused.value)
    written = len(json.dumps(rest.status, separators=(",", ":"))) + sum(
        len(c["data"]["chunk.json"]) + CHUNK_OVERHEAD for c in rest.configmaps.values())
    assert written == stored_bytes(rest.status)  # what the operator counts from the watch
    assert written <= 60_000 and step > 2  # what was written stayed under it; the refused step wrote nothing
    assert rest.status["step"] == step - 1
