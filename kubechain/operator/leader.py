"""Leader election on a Lease (the rules: kubechain/core/leases.py): wait to take it, keep renewing it, release it.

The renewals run on the elector's own thread, never as a coroutine of the event loop nor in the loop's default
executor: under a 1,000-Task burst the loop resumed a renewing coroutine seconds late and the executor held hundreds
of waiting calls, and the Lease went to the standby and back, over and over. Each try has its own connection, no
hidden retries, and what is left of the renew deadline as its timeout (client-go's context): a loaded apiserver
answering in 3 s keeps its leader, and a hanging connection cannot stretch a renewal past the deadline.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubechain.core.leases import Observed, Record, claimed, may_take, observe, released

from .settings import LeaderSettings

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "coordination.k8s.io", "v1", "leases"


def now_rfc3339() -> str:
    """MicroTime as the apiserver parses it (always six digits: isoformat() drops them at .000000)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """client-go's: the host name (a pod's name) and a random suffix, so a restarted process is a new candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(self, settings: LeaderSettings, api: client.ApiClient | None = None):
        self.settings = settings
        self.namespace, _, self.name = settings.lease.partition("/")
        self.identity = settings.identity or default_identity()
        if api is None:
            configuration = client.Configuration.get_default_copy()
            configuration.retries = False  # a retry would be the next try, within the deadline
            api = client.ApiClient(configuration)
        self._api = client.CustomObjectsApi(api)  # any group's objects as dicts: no typed-model round trips
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        self._stop = threading.Event()  # set by release(): renewals end
        self.on_lost: Callable[[], None] | None = None
        self._request_seconds = max(settings.retry_seconds, 1.0)  # the timeout of the next try's requests
        self._observed: Observed | None = None
        self._resource_version = ""
        self.leading = False

    async def acquire(self) -> None:
        """Returns once this replica holds the Lease (tries every retry period, jittered as client-go does)."""
        log.info("waiting for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not await self._try():
            await asyncio.sleep(self.settings.retry_seconds * random.uniform(1.0, 1.2))
        log.info("took Lease %s/%s as %s: reconciling", self.namespace, self.name, self.identity)
        self.leading = True

    async def keep(self) -> None:
        """Renew every retry period; returns when the Lease is lost: renewals failed for the renew deadline, or
        someone else holds it. The caller must stop reconciling at once (`on_lost`, if set, is called first, from
        the elector's thread: a loop too busy to notice soon must not go on reconciling)."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._keep_blocking)
        self.leading = False

    def _keep_blocking(self) -> None:
        """keep()'s loop, on the elector's thread: an event loop busy with a burst's handlers resumed a coroutine
        renewing there seconds late, and the Lease went to the standby and back."""
        renewed = time.monotonic()
        while not self._stop.wait(self.settings.retry_seconds):
            left = self.settings.renew_deadline_seconds - (time.monotonic() - renewed)
            self._request_seconds = max(left, 1.0)
            try:
                if self._try_blocking():
                    renewed = time.monotonic()
                    continue
            except Exception as exc:  # an apiserver that does not answer: not renewed this time
                log.warning("Lease %s/%s: %s", self.namespace, self.name, exc)
            holder = self._observed.record.holder if self._observed and self._observed.record else ""
            if holder and holder != self.identity:
                log.error("Lease %s/%s is now held by %s", self.namespace, self.name, holder)
                break
            if time.monotonic() - renewed >= self.settings.renew_deadline_seconds:
                log.error("Lease %s/%s not renewed for %.0f s", self.namespace, self.name,
                          self.settings.renew_deadline_seconds)
                break
        else:
            return  # released
        self.leading = False
        if self.on_lost is not None:
            self.on_lost()

    async def release(self) -> None:
        """Rule 4, on a clean stop: a standby takes over at its next try. Renewals stop first (the release then
        runs after the last of them, on the same thread)."""
        self._stop.set()
        if not self.leading or self._observed is None or self._observed.record is None:
            return
        self.leading = False
        record = released(self._observed.record, now_rfc3339())
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._replace, record)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # it then expires on its own
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)

    async def _try(self) -> bool:
        """client-go's tryAcquireOrRenew: read, decide, write with the resourceVersion read."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._try_blocking)
        except Exception as exc:  # an apiserver that does not answer: not renewed this time
            log.warning("Lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    def _try_blocking(self) -> bool:
        current = self._read()
        now = time.monotonic()
        if current is None:
            return self._create(claimed(None, self.identity, now_rfc3339(), self.settings.duration_seconds))
        record = Record.from_spec(current.get("spec") or {})
        self._observed = observe(self._observed, record, now)
        self._resource_version = current["metadata"]["resourceVersion"]
        if not may_take(self._observed, self.identity, now):
            return False
        try:
            self._replace(claimed(record, self.identity, now_rfc3339(), self.settings.duration_seconds))
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first
                return False
            raise
        return True

    def _timeout(self) -> float:
        return self._request_seconds

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                              _preload_content=False, _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)

    def _create(self, record: Record) -> bool:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.to_spec()}
        try:
            created = self._api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body,
                                                                _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._remember(created, record)
        return True

    def _replace(self, record: Record) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": self._resource_version},
                "spec": record.to_spec()}
        written = self._api.replace_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name, body,
                                                             _request_timeout=self._timeout())
        self._remember(written, record)

    def _remember(self, written: dict[str, Any], record: Record) -> None:
        self._resource_version = written["metadata"]["resourceVersion"]
        self._observed = observe(self._observed, record, time.monotonic())
