"""The operator's side of the external context store (kubechain/core/contextstore.py picks it): the DSN read from
its Secret for the run's actor, the rows deleted with the run, and the sweep at start-up.

Deletion: a deleted TaskRun's rows are deleted by its uid when the watch shows the deletion (no finalizer: a run's
deletion never waits on a database). One deleted while no operator ran is caught by the sweep, which the leader
runs when it starts: every store it knows of (its default, and those named in the TaskRuns' statuses and their
contextStorageRefs, and the Tasks' contextStorageRefs) loses the rows of runs no TaskRun has, except rows written since its listing began (a run
created meanwhile). A store that only a deleted run named is not known any more: its Secret's owner cleans it.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

from pydantic import SecretStr

from kubechain.api.runspec import ContextStore
from kubechain.api.v1alpha1 import GROUP, VERSION, ContextStorageRef, StoreLocation
from kubechain.core.contextstore import default_location, location
from kubechain.core.storage import store_name
from kubechain.runtime import contextdb

from .kube import Kube
from .settings import StorageSettings

log = logging.getLogger(__name__)
_cleared: set[str] = set()  # runs whose moved ConfigMaps this process deleted


def default(settings: StorageSettings) -> StoreLocation | None:
    return default_location(settings.context_storage_secret, settings.context_storage_key)


async def dsn(kube: Kube, where: StoreLocation) -> tuple[str | None, str | None]:
    """(the DSN, None) or (None, why not), read with the operator's own rights."""
    secret = await kube.secret_value(where.namespace, where.secret, where.key)
    if secret.problem:
        return None, f"{secret.problem} in namespace {where.namespace!r} (the DSN of the context store)"
    return secret.value, None


async def for_run(kube: Kube, settings: StorageSettings, namespace: str, ref: ContextStorageRef | None,
                  recorded: StoreLocation | None) -> tuple[ContextStore | None, str | None]:
    """The run's store with its DSN for the RunSpec (None: ConfigMaps), or why it cannot have it."""
    where, overflow = location(namespace, ref, default(settings), recorded)
    if where is None:
        return None, None
    value, problem = await dsn(kube, where)
    if problem:
        return None, problem
    return ContextStore(location=where, dsn=SecretStr(value or ""), wait_seconds=settings.context_store_wait_seconds,
                        overflow=overflow), None


async def for_fork_source(kube: Kube, settings: StorageSettings, namespace: str, source: str
                          ) -> tuple[ContextStore | None, str | None]:
    """The external store a fork's source keeps its chunks in, with its DSN (None: ConfigMaps, or the source is
    gone: the fork's actor says so), or why it cannot have it."""
    obj = await kube.get("taskruns", namespace, source)
    recorded = (((obj or {}).get("status") or {}).get("sealedContext") or {}).get("store")
    if not recorded:
        return None, None
    where = StoreLocation.model_validate(recorded)
    value, problem = await dsn(kube, where)
    if problem:
        return None, problem
    return ContextStore(location=where, dsn=SecretStr(value or ""),
                        wait_seconds=settings.context_store_wait_seconds), None


async def delete_rows(kube: Kube, uid: str, where: StoreLocation) -> None:
    """A deleted run's rows (best effort: what is left, the next sweep deletes)."""
    value, problem = await dsn(kube, where)
    try:
        if problem:
            raise RuntimeError(problem)
        await asyncio.to_thread(contextdb.delete_run, value or "", uid)
    except Exception as exc:
        log.warning("rows of deleted TaskRun %s not deleted from %s (the next sweep does): %s", uid,
                    store_name(where), exc)


def clear_moved(kube: Kube, namespace: str, name: str, uid: str, status: dict[str, Any]) -> Any:
    """The deletion of the ConfigMaps of chunks a run moved to its store (once per process), or None."""
    moved = int((status.get("sealedContext") or {}).get("moved") or 0)
    if not moved or uid in _cleared:
        return None
    _cleared.add(uid)
    return kube.delete_chunks(namespace, name, moved)


async def sweep(kube: Kube, settings: StorageSettings) -> dict[str, list[str]]:
    """Delete the rows of runs that no TaskRun has any more, in every store known; {store: uids deleted}."""
    listed_at = datetime.now(timezone.utc)
    found = await asyncio.to_thread(kube.custom.list_cluster_custom_object, GROUP, VERSION, "taskruns")
    tasks = await asyncio.to_thread(kube.custom.list_cluster_custom_object, GROUP, VERSION, "tasks")
    runs = found.get("items", [])
    live = {r["metadata"]["uid"] for r in runs}
    known = known_stores(runs + tasks.get("items", []), default(settings))  # a Task's run may have been deleted
    stores = {where.model_dump_json(): where for where in known}
    swept: dict[str, list[str]] = {}
    for where in stores.values():
        value, problem = await dsn(kube, where)
        try:
            if problem:
                raise RuntimeError(problem)
            swept[store_name(where)] = await asyncio.to_thread(contextdb.sweep, value or "", live, listed_at)
        except Exception as exc:
            log.warning("context store sweep of %s skipped: %s", store_name(where), exc)
    for name, uids in swept.items():
        if uids:
            log.info("context store sweep: deleted the rows of %d runs gone from %s", len(uids), name)
    return swept


def known_stores(runs: list[dict[str, Any]], fallback: StoreLocation | None) -> list[StoreLocation]:
    """The default store and every store a TaskRun's status or a TaskRun's or Task's contextStorageRef names."""
    out = [fallback] if fallback else []
    for run in runs:
        namespace = run["metadata"]["namespace"]
        recorded = ((run.get("status") or {}).get("sealedContext") or {}).get("store")
        ref = (run.get("spec") or {}).get("contextStorageRef") or {}
        if recorded:
            out.append(StoreLocation.model_validate(recorded))
        elif ref.get("kind") == "PostgreSQL" and ref.get("name"):
            out.append(StoreLocation(namespace=namespace, secret=ref["name"], key=ref.get("key") or "dsn"))
    return out


async def sweep_soon(kube: Kube, settings: StorageSettings) -> None:
    """The start-up sweep, in the background (a store that does not answer does not hold up the operator)."""
    try:
        await sweep(kube, settings)
    except Exception as exc:
        log.warning("context store sweep failed: %s", exc)
