"""The external context store's pure parts: which store a run uses, who may name one, what counts against etcd,
the ContextStoreAvailable condition, and which stores the sweep visits."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kubechain.api.v1alpha1 import (ConditionType, ContextStorageRef, ContextStoreWait, Phase, SealedContext,
                                    StoreLocation, TaskRunSpec, TaskRunStatus)
from kubechain.core import access
from kubechain.core.contextstore import default_location, location
from kubechain.core.run_conditions import context_store_available
from kubechain.core.storage import CHUNK_OVERHEAD, stored_bytes
from kubechain.operator.contextstore import known_stores

DEFAULT = StoreLocation(namespace="kubechain-system", secret="context-db")
OWN = StoreLocation(namespace="team", secret="pg", key="url")
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("ref, default, recorded, expected", [
    (None, None, None, (None, False)),
    (None, DEFAULT, None, (DEFAULT, False)),
    ({"kind": "PostgreSQL", "name": "pg", "key": "url"}, DEFAULT, None, (OWN, False)),
    ({"kind": "PostgreSQL", "name": "pg", "key": "url"}, None, None, (OWN, False)),
    ({"kind": "ConfigMap"}, DEFAULT, None, (DEFAULT, True)),
    ({"kind": "ConfigMap"}, None, None, (None, False)),
    ({"kind": "PersistentVolumeClaim", "name": "old"}, None, None, (None, False)),
    ({"kind": "ConfigMap"}, DEFAULT, OWN, (OWN, False)),
    (None, None, DEFAULT, (DEFAULT, False)),
], ids=["none->configmaps", "none->default", "postgres->its-secret", "postgres-without-default",
        "configmap->default-as-overflow", "configmap-without-default", "pvc-kept-as-configmap",
        "recorded-wins-over-ref", "recorded-wins-over-no-default"])
def test_which_store_a_run_uses(ref, default, recorded, expected):
    parsed = ContextStorageRef.model_validate(ref) if ref else None
    assert location("team", parsed, default, recorded) == expected


@pytest.mark.parametrize("setting, expected", [
    ("kubechain-system/context-db", DEFAULT), ("", None), ("just-a-name", None), ("a/b/c", None), (" / ", None)])
def test_the_default_store_setting(setting, expected):
    assert default_location(setting) == expected


def test_a_postgres_ref_needs_the_secrets_name_and_is_copied_from_a_task_to_its_run():
    with pytest.raises(ValueError, match="kind PostgreSQL needs name"):
        ContextStorageRef(kind="PostgreSQL")
    spec = TaskRunSpec.model_validate({"taskRef": {"name": "t"},
                                       "contextStorageRef": {"kind": "PostgreSQL", "name": "pg"}})
    assert spec.context_storage_ref.key == "dsn"


@pytest.mark.parametrize("kind", ["Task", "TaskRun"])
def test_naming_a_store_secret_needs_get_on_it_and_the_refusal_names_field_and_secret(kind):
    spec = {"contextStorageRef": {"kind": "PostgreSQL", "name": "db-dsn"}}
    found = access.uses(kind, spec)
    assert found == [access.Use("spec.contextStorageRef", "Secret", "db-dsn")]
    assert access.questions(found) == [access.Access("get", "secrets", "db-dsn")]
    author = access.Author("tenant")
    [refused] = access.refusals(found, author, "team", {})
    assert refused.startswith("spec.contextStorageRef: user tenant may not get Secret 'db-dsn' in namespace 'team'")
    assert access.refusals(found, author, "team", {access.Access("get", "secrets", "db-dsn"): True}) == []
    assert access.uses(kind, {"contextStorageRef": {"kind": "ConfigMap"}}) == []


def test_a_schedules_run_template_naming_a_store_secret_is_checked_too():
    spec = {"runTemplate": {"agentRef": {"name": "a"}, "userInput": "u",
                            "contextStorageRef": {"kind": "PostgreSQL", "name": "db-dsn"}}}
    assert access.uses("TaskSchedule", spec) == [access.Use("spec.runTemplate.contextStorageRef", "Secret", "db-dsn")]
    assert access.uses("TaskSchedule", {"runTemplate": {}}) == []


def test_chunks_in_an_external_store_do_not_count_against_etcd():
    sealed = {"chunks": 10, "bytes": 500_000}
    in_configmaps = stored_bytes({"sealedContext": sealed})
    external = stored_bytes({"sealedContext": {**sealed, "store": DEFAULT.to_wire()}})
    assert in_configmaps - external >= 500_000 + 10 * CHUNK_OVERHEAD - 200  # the store's few bytes in status
    assert external < 300


def condition(status: TaskRunStatus):
    return next((c for c in status.conditions if c.type == ConditionType.CONTEXT_STORE_AVAILABLE), None)


def test_context_store_available_follows_the_actors_wait():
    status = TaskRunStatus(phase=Phase.RUNNING)
    assert context_store_available(status, NOW) is status  # never waited: no condition
    wait = ContextStoreWait(since="2026-12-01T00:00:00Z", until="2026-12-01T00:10:00Z", message="db down")
    waiting = context_store_available(status.model_copy(update={"context_store_wait": wait}), NOW)
    assert (condition(waiting).status, condition(waiting).reason) == ("False", "ContextStoreUnavailable")
    assert "db down; waiting until 2026-12-01T00:10:00Z" == condition(waiting).message
    assert context_store_available(waiting, NOW) is waiting  # unchanged: no write
    back = context_store_available(waiting.model_copy(update={"context_store_wait": None}), NOW)
    assert (condition(back).status, condition(back).reason) == ("True", "ContextStoreRecovered")
    assert context_store_available(back, NOW) is back


def test_the_sweep_visits_the_default_store_and_every_store_a_run_names():
    runs = [{"metadata": {"namespace": "team"}, "spec": {"contextStorageRef": {"kind": "PostgreSQL", "name": "pg",
                                                                               "key": "url"}}},
            {"metadata": {"namespace": "other"}, "status": {"sealedContext": SealedContext(
                store=StoreLocation(namespace="other", secret="db")).to_wire()}},
            {"metadata": {"namespace": "plain"}, "spec": {}}]
    assert known_stores(runs, DEFAULT) == [DEFAULT, OWN, StoreLocation(namespace="other", secret="db")]
    assert known_stores(runs[2:], None) == []
