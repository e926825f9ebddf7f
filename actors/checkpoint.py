"""The one module that reads and writes TaskRun checkpoints (the TaskRun's status) and events.

Every step the actor writes the fields it owns with a JSON merge patch on the status subresource.
The durability work will make this append-only and move large contexts out of line; the loop
only sees `CheckpointStore`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Protocol

from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import API_VERSION, GROUP, VERSION, TaskRunStatus
from kubechain.api.v1alpha1.common import now_rfc3339

# The operator owns `agent`, `actor` and `conditions`; the actor writes only these.
ACTOR_FIELDS = {"phase", "message", "step", "context_window", "tool_call_history", "phase_history",
                "output", "error", "usage"}
COMPONENT = "kubechain-actor"
log = logging.getLogger(__name__)


class KubeError(Exception):
    """The apiserver refused a checkpoint or event write."""


class RunGone(Exception):
    """The TaskRun was deleted (or replaced by a new object of the same name): stop working on it."""


class CheckpointStore(Protocol):
    async def load(self) -> TaskRunStatus: ...
    async def save(self, status: TaskRunStatus) -> None: ...
    async def event(self, reason: str, message: str, warning: bool = False) -> None: ...


class KubeREST:
    """The three REST calls an actor makes, on the kubernetes client's connection pool and credentials.

    Below the generated API classes on purpose: importing CoreV1Api alone costs ~0.5 s per actor
    process, and the generated methods validate every argument with pydantic on each call.
    """

    def __init__(self) -> None:
        from kubernetes import client, config  # ~0.1 s, paid once per actor

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()  # $KUBECONFIG, as handed to the Ray head locally
        self._api = client.ApiClient()
        self._error = client.exceptions.ApiException

    def request(self, method: str, path: str, body: dict | None = None,
                content_type: str = "application/json") -> tuple[int, dict]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # Refreshes rotating credentials (in-cluster tokens, exec plugins) like the generated methods do.
        self._api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        response = self._api.call_api(method, self._api.configuration.host + path, headers, body)
        data = response.read()
        return response.status, (json.loads(data) if data else {})


class KubeCheckpointStore:
    """Checkpoints in the TaskRun's status, written with the actor's own Kubernetes credentials."""

    def __init__(self, ref: TaskRunRef, rest: KubeREST | None = None):
        self.ref = ref
        self._rest = rest or KubeREST()
        self._path = f"/apis/{GROUP}/{VERSION}/namespaces/{ref.namespace}/taskruns/{ref.name}/status"

    async def load(self) -> TaskRunStatus:
        obj = await self._call("GET", self._path)
        if obj["metadata"]["uid"] != self.ref.uid:
            raise RunGone(f"TaskRun {self.ref.namespace}/{self.ref.name} was replaced")
        return TaskRunStatus.model_validate(obj.get("status") or {})

    async def save(self, status: TaskRunStatus) -> None:
        fields = status.to_wire(include=ACTOR_FIELDS)
        # The uid makes the patch fail on a different object of the same name.
        body = {"metadata": {"uid": self.ref.uid}, "status": fields}
        await self._call("PATCH", self._path, body, "application/merge-patch+json")

    async def event(self, reason: str, message: str, warning: bool = False) -> None:
        now = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{self.ref.name}.", "namespace": self.ref.namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": "TaskRun", "name": self.ref.name,
                               "namespace": self.ref.namespace, "uid": self.ref.uid},
            "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{self.ref.namespace}/events", body)
        except (RunGone, KubeError) as exc:  # an Event is best effort; the status already says it all
            log.warning("event %s not posted: %s", reason, exc)

    async def _call(self, method: str, path: str, body: dict | None = None,
                    content_type: str = "application/json") -> dict:
        status, data = await asyncio.to_thread(self._rest.request, method, path, body, content_type)
        if status < 400:
            return data
        message = data.get("message", "") if isinstance(data, dict) else str(data)
        if status == 404 or (status in (409, 422) and "uid" in message.lower()):
            raise RunGone(f"TaskRun {self.ref.namespace}/{self.ref.name}: {status} {message}")
        raise KubeError(f"{method} {path}: {status} {message}")
