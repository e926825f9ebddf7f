"""The external context store on the real stack with a real PostgreSQL: runs whose sealed chunks live in the
database (contextStorageRef kind PostgreSQL), through an actor kill, an operator kill and a database restart;
their rows deleted with the TaskRun, or by the sweep when the operator was down; the access rules of the Secret
that holds the DSN, for writers (admission) and readers (kubechain transcript)."""
from __future__ import annotations

import asyncio
import hashlib
import json

import psycopg
import pytest
from kubernetes import client, config

from harness.localenv import kubectl
from kubechain.clients import transcript as transcripts

from .chaos import kill_actor, wait_until
from .conftest import Kube, task
from .test_context import FIRST_ACTOR_SECONDS, NOTES, note_taker, transcript
from .test_tenancy import refusal, tenant

pytestmark = pytest.mark.integration
PG_REF = {"contextStorageRef": {"kind": "PostgreSQL", "name": "pg"}}


def store_secret(kube: Kube, postgres, name: str = "pg") -> None:
    kube.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"dsn": postgres.dsn}}])


def rows(postgres, uid: str) -> int:
    with psycopg.connect(postgres.dsn) as conn:
        if not conn.execute("SELECT to_regclass('kubechain_chunks') IS NOT NULL").fetchone()[0]:
            return 0
        return conn.execute("SELECT count(*) FROM kubechain_chunks WHERE run_uid = %s", (uid,)).fetchone()[0]


def chunk_maps(kube: Kube, run: str) -> list[str]:
    return kube.run("get", "configmaps", "-l", f"kubechain.dev/taskrun={run}", "-o", "name").stdout.split()


def sealed(obj: dict) -> dict:
    return (obj.get("status") or {}).get("sealedContext") or {}


def start_notes(kube: Kube, stack, postgres, name: str, latency: float = 0.2, **extra) -> None:
    note_taker(kube, stack, "truncate", declared=True, latency=latency)
    store_secret(kube, postgres)
    kube.apply([task(name, "scribe", "Write forty notes.", **PG_REF, **extra)])


def check_all_notes(kube: Kube, stack, name: str) -> None:
    """Every note once, in order, read back by `kubechain transcript` from the store and the status."""
    messages = transcript(kube, stack, name)
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert len(results) == NOTES == len(set(results))
    assert all(len(m["content"]) > 2048 for m in messages if m["role"] == "tool")


def check_in_store(kube: Kube, postgres, run: dict) -> None:
    where = sealed(run)
    assert where["store"] == {"kind": "PostgreSQL", "namespace": kube.namespace, "secret": "pg", "key": "dsn"}
    assert where["chunks"] >= 2 and rows(postgres, run["metadata"]["uid"]) == where["chunks"]
    assert chunk_maps(kube, run["metadata"]["name"]) == []  # nothing of it in etcd but the status


def test_a_run_in_the_store_survives_an_actor_kill_and_its_rows_go_with_the_taskrun(kube, stack, postgres):
    start_notes(kube, stack, postgres, "long")
    running = kube.wait_for("taskrun", "long-run", lambda o: sealed(o).get("chunks", 0) >= 2, FIRST_ACTOR_SECONDS,
                            "two chunks sealed")
    kill_actor(stack, running["status"]["actor"]["name"])
    run = kube.wait_phase("long-run", "Completed", timeout=FIRST_ACTOR_SECONDS)
    assert run["status"]["epoch"] == 2 and run["status"]["output"] == "all noted"
    check_in_store(kube, postgres, run)
    check_all_notes(kube, stack, "long-run")
    kube.run("delete", "taskrun", "long-run")
    wait_until(lambda: rows(postgres, run["metadata"]["uid"]) == 0, 30, "its rows deleted")


def test_operator_killed_mid_run_with_the_store(kube, stack, postgres):
    start_notes(kube, stack, postgres, "steady")
    kube.wait_for("taskrun", "steady-run", lambda o: sealed(o).get("chunks", 0) >= 1, FIRST_ACTOR_SECONDS,
                  "a chunk sealed")
    restarts = stack.operator.restarts
    stack.operator.kill()
    stack.operator.wait_restarted(restarts + 1)
    run = kube.wait_phase("steady-run", "Completed", timeout=FIRST_ACTOR_SECONDS)
    assert (run["status"]["epoch"], run["status"]["actor"]["restarts"]) == (1, 0)  # the same actor went on
    check_in_store(kube, postgres, run)
    check_all_notes(kube, stack, "steady-run")


def condition(obj: dict) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "ContextStoreAvailable"),
                {})


def test_a_database_restarted_mid_run_is_waited_for_visibly_and_nothing_is_lost(kube, stack, postgres):
    start_notes(kube, stack, postgres, "patient", latency=0.3)
    kube.wait_for("taskrun", "patient-run", lambda o: sealed(o).get("chunks", 0) >= 1, FIRST_ACTOR_SECONDS,
                  "a chunk sealed")
    postgres.stop()
    try:
        waiting = kube.wait_for("taskrun", "patient-run", lambda o: condition(o).get("status") == "False", 60,
                                "ContextStoreAvailable=False")
        assert f"Secret {kube.namespace}/pg does not answer" in condition(waiting)["message"]
        assert waiting["status"]["phase"] == "Running" and waiting["status"]["contextStoreWait"]["until"]
        step = waiting["status"]["step"]
        wait_until(lambda: any(e["reason"] == "ContextStoreUnavailable" for e in kube.events("patient-run")), 30,
                   "a Warning Event")
    finally:
        postgres.start()
    run = kube.wait_phase("patient-run", "Completed", timeout=FIRST_ACTOR_SECONDS)
    assert condition(run)["status"] == "True" and "contextStoreWait" not in run["status"]
    assert run["status"]["epoch"] == 1 and run["status"]["step"] > step  # it went on, no new actor
    assert any(e["reason"] == "ContextStoreRecovered" for e in kube.events("patient-run"))
    check_in_store(kube, postgres, run)
    check_all_notes(kube, stack, "patient-run")


def test_rows_of_a_run_deleted_while_the_operator_was_down_are_swept_when_it_starts(kube, stack, postgres):
    start_notes(kube, stack, postgres, "gone", latency=0.0, ttlSecondsAfterFinished=0)
    run = kube.wait_phase("gone-run", "Completed", timeout=FIRST_ACTOR_SECONDS)
    uid = run["metadata"]["uid"]
    assert rows(postgres, uid) == sealed(run)["chunks"] >= 2
    restarts = stack.operator.restarts
    stack.operator.kill_reconciler(hold=True)
    try:
        kube.run("delete", "taskrun", "gone-run", "--wait=true")  # no operator saw it go
        assert rows(postgres, uid) > 0
    finally:
        stack.operator.release()
    stack.operator.wait_restarted(restarts + 1)
    wait_until(lambda: rows(postgres, uid) == 0, 60, "the sweep to delete its rows")
    # said once every known store is swept (the rows above may go a moment before the line is written)
    wait_until(lambda: "context store sweep: deleted the rows of" in stack.operator.log.read_text(), 60,
               "the sweep to say what it deleted")


def test_a_store_secret_is_named_only_by_who_may_get_it_and_read_back_only_with_rights(kube, stack, postgres):
    as_tenant = tenant(kube)
    store_secret(kube, postgres)
    refused = refusal(kube, as_tenant, task("t", "scribe", "hello", **PG_REF))
    assert (f"spec.contextStorageRef: user system:serviceaccount:{kube.namespace}:tenant may not get Secret 'pg' "
            f"in namespace '{kube.namespace}'") in refused
    run = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "direct"},
           "spec": {"agentRef": {"name": "scribe"}, "userInput": "hi", **PG_REF}}
    assert "spec.contextStorageRef: user" in refusal(kube, as_tenant, run)
    # A run the admin started: the tenant may get the TaskRun but not the DSN's Secret, so its chunks stay unread.
    start_notes(kube, stack, postgres, "mine", latency=0.0)
    done = kube.wait_phase("mine-run", "Completed", timeout=FIRST_ACTOR_SECONDS)
    api = config.new_client_from_config(config_file=str(stack.kubeconfig))
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{kube.namespace}:tenant")
    with pytest.raises(client.exceptions.ApiException) as denied:
        transcripts.load(kube.namespace, "mine-run", api)
    assert denied.value.status == 403 and "secrets" in denied.value.body
    admin = config.new_client_from_config(config_file=str(stack.kubeconfig))
    _, messages, _ = transcripts.load(kube.namespace, "mine-run", admin)
    assert len(messages) > len(done["status"]["contextWindow"])
    stranger = config.new_client_from_config(config_file=str(stack.kubeconfig))
    stranger.set_default_header("Impersonate-User", "nobody")
    with pytest.raises(client.exceptions.ApiException) as hidden:  # may not get the run: sees nothing of it
        transcripts.load(kube.namespace, "mine-run", stranger)
    assert hidden.value.status == 403


def test_a_5mb_2000_message_context_in_the_store_through_the_real_apiserver(kube, stack, postgres, monkeypatch):
    """The actor's checkpoint store on the real kube-apiserver with the PostgreSQL store: 5 MB written step by
    step go to the database, the TaskRun stays small, no chunk ConfigMap exists, a fresh store rebuilds it all."""
    from pydantic import SecretStr

    from actors.checkpoint import KubeCheckpointStore
    from kubechain.api.runspec import ContextStore, TaskRunRef
    from kubechain.api.v1alpha1 import Phase, StoreLocation
    from tests.unit.test_context_layout import grow

    monkeypatch.setenv("KUBECONFIG", str(stack.kubeconfig))
    store_secret(kube, postgres)  # what the operator reads to delete the rows with the run
    kube.apply([{"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "long"},
                 "spec": {"taskRef": {"name": "none"}}}])  # no Task: the operator leaves it Pending
    uid = kube.get("taskrun", "long")["metadata"]["uid"]
    ref = TaskRunRef(namespace=kube.namespace, name="long", uid=uid)
    store = ContextStore(location=StoreLocation(namespace=kube.namespace, secret="pg"), dsn=SecretStr(postgres.dsn))

    def digest(status) -> str:
        wire = [m.to_wire() for m in status.context_window] + [c.to_wire() for c in status.tool_call_history]
        return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()

    async def write() -> str:
        writer = KubeCheckpointStore(ref, epoch=0, context_store=store)
        status = (await writer.load()).model_copy(update={"phase": Phase.RUNNING})
        for i in range(1, 1001):
            grow(status, i)
            if i % 10 == 0:  # a checkpoint per 10 steps keeps the test quick; the layout is the same
                await writer.save(status)
        await writer.close()
        return digest(status)

    async def read():
        reader = KubeCheckpointStore(ref, epoch=0, context_store=store)
        try:
            return await reader.load()
        finally:
            await reader.close()

    written = asyncio.run(write())
    restored = asyncio.run(read())
    assert len(restored.context_window) == 2000 and digest(restored) == written
    obj = kube.get("taskrun", "long")
    assert len(json.dumps(obj)) < 64 * 1024 and rows(postgres, uid) == sealed(obj)["chunks"] >= 100
    assert chunk_maps(kube, "long") == []
    kubectl(stack.kubeconfig, "-n", kube.namespace, "delete", "taskrun", "long")
    wait_until(lambda: rows(postgres, uid) == 0, 30, "its rows deleted")


def test_at_its_allowance_a_run_moves_its_chunks_to_the_default_store_instead_of_failing(kube, stack, postgres):
    store_ns = f"{kube.namespace[:40]}-store"  # the cluster admin's: the default store's Secret
    kubectl(stack.kubeconfig, "create", "namespace", store_ns)
    store_secret(Kube(stack, store_ns), postgres, "context-db")
    stack.operator.reconfigure(KUBECHAIN_CONTEXT_STORAGE_SECRET=f"{store_ns}/context-db")
    try:
        kubectl(stack.kubeconfig, "annotate", "namespace", kube.namespace, "kubechain.dev/max-stored-bytes=60000")
        note_taker(kube, stack, "truncate", declared=True)  # ~100 KB: StorageQuotaExceeded in ConfigMaps alone
        kube.apply([task("moved", "scribe", "Write forty notes.", contextStorageRef={"kind": "ConfigMap"})])
        run = kube.wait_phase("moved-run", "Completed", timeout=FIRST_ACTOR_SECONDS)
    finally:
        stack.operator.reconfigure(KUBECHAIN_CONTEXT_STORAGE_SECRET=None)
    where = sealed(run)
    assert where["store"] == {"kind": "PostgreSQL", "namespace": store_ns, "secret": "context-db", "key": "dsn"}
    assert 0 < where["moved"] < where["chunks"] and rows(postgres, run["metadata"]["uid"]) == where["chunks"]
    moved = [e for e in kube.events("moved-run") if e["reason"] == "ContextMoved"]
    assert len(moved) == 1 and f"{where['moved']} sealed chunks moved to" in moved[0]["message"]
    wait_until(lambda: chunk_maps(kube, "moved-run") == [], 30, "the moved ConfigMaps deleted")
    check_all_notes(kube, stack, "moved-run")


def test_a_run_in_the_store_is_forked_with_its_sealed_chunks(kube, stack, postgres):
    start_notes(kube, stack, postgres, "source", latency=0.0)
    source = kube.wait_phase("source-run", "Completed", timeout=FIRST_ACTOR_SECONDS)
    check_in_store(kube, postgres, source)
    step = source["status"]["step"] - 3  # the steps the fork keeps are mostly in the store
    kube.apply([{"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "copy"},
                 "spec": {"forkOf": {"name": "source-run", "step": step}}}])
    fork = kube.wait_phase("copy", "Completed", timeout=FIRST_ACTOR_SECONDS)
    assert fork["status"]["output"] == "all noted" and fork["status"]["forkedFrom"]["step"] == step
    assert "store" not in sealed(fork) and chunk_maps(kube, "copy")  # its own chunks: ConfigMaps (no ref)
    # The same script from the fork's step on: the same conversation (where each compacts may differ: the fork
    # compacts its own copy when it first asks).
    def said(run: str) -> list[dict]:
        return [m for m in transcript(kube, stack, run) if m.get("name") != "kubechain-compaction"]
    assert said("copy") == said("source-run")
    check_all_notes(kube, stack, "copy")
