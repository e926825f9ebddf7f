"""The one module that reads and writes TaskRun checkpoints (the TaskRun's status) and events.

Every step the actor writes the fields it owns with a JSON merge patch on the status subresource.
The durability work will make this append-only and move large contexts out of line; the loop
only sees `CheckpointStore`.
"""
from __future__ import annotations

import asyncio
import os
from typing import Protocol

from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import API_VERSION, GROUP, VERSION, TaskRunStatus
from kubechain.api.v1alpha1.common import now_rfc3339

# The operator owns `agent`, `actor` and `conditions`; the actor writes only these.
ACTOR_FIELDS = {"phase", "message", "step", "context_window", "tool_call_history", "phase_history",
                "output", "error", "usage"}
COMPONENT = "kubechain-actor"


class RunGone(Exception):
    """The TaskRun was deleted (or replaced by a new object of the same name): stop working on it."""


class CheckpointStore(Protocol):
    async def load(self) -> TaskRunStatus: ...
    async def save(self, status: TaskRunStatus) -> None: ...
    async def event(self, reason: str, message: str, warning: bool = False) -> None: ...


def _api_client():
    # Imported lazily: the kubernetes client costs ~0.4 s of import, paid once per actor.
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()  # $KUBECONFIG, as handed to the Ray head locally
    return client, client.ApiClient()


class KubeCheckpointStore:
    """Checkpoints in the TaskRun's status, written with the actor's own Kubernetes credentials."""

    def __init__(self, ref: TaskRunRef):
        self.ref = ref
        self._k8s, api = _api_client()
        self._custom = self._k8s.CustomObjectsApi(api)
        self._core = self._k8s.CoreV1Api(api)
        self._exc = self._k8s.exceptions.ApiException

    async def load(self) -> TaskRunStatus:
        obj = await self._call(self._custom.get_namespaced_custom_object_status,
                               GROUP, VERSION, self.ref.namespace, "taskruns", self.ref.name)
        if obj["metadata"]["uid"] != self.ref.uid:
            raise RunGone(f"TaskRun {self.ref.namespace}/{self.ref.name} was replaced")
        return TaskRunStatus.model_validate(obj.get("status") or {})

    async def save(self, status: TaskRunStatus) -> None:
        fields = status.to_wire(include=ACTOR_FIELDS)
        # The uid makes the patch fail on a different object of the same name.
        body = {"metadata": {"uid": self.ref.uid}, "status": fields}
        await self._call(self._custom.patch_namespaced_custom_object_status,
                         GROUP, VERSION, self.ref.namespace, "taskruns", self.ref.name, body)

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
            await self._call(self._core.create_namespaced_event, self.ref.namespace, body)
        except RunGone:
            pass

    async def _call(self, fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except self._exc as exc:
            replaced = exc.status in (409, 422) and "uid" in str(exc.body).lower()
            if exc.status == 404 or replaced:
                raise RunGone(f"TaskRun {self.ref.namespace}/{self.ref.name}: {exc.status} {exc.reason}") from None
            raise
