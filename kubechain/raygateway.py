"""The operator's only door to Ray: connect (with token auth) and start or find TaskRun actors.

Blocking (the Ray API is); controllers call it through asyncio.to_thread. Tests of handlers can
pass any object with the same methods.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from kubechain.api.runspec import RunSpec
from kubechain.api.v1alpha1 import ActorRef
from kubechain.naming import actor_name
from kubechain.settings import RaySettings

log = logging.getLogger(__name__)


class ActorGateway(Protocol):
    def ensure_actor(self, spec: RunSpec) -> ActorRef: ...


def configure_token_auth() -> None:
    """Ray 2.60 heads enforce token auth by default: find the token the way Ray does and pass it on.

    The token goes in RAY_AUTH_TOKEN because Ray Client's per-connection server does not honour
    RAY_AUTH_TOKEN_PATH (seen with ray 2.60: "SpecificServer startup failed").
    """
    if os.environ.get("RAY_AUTH_MODE") == "disabled":
        return
    token = os.environ.get("RAY_AUTH_TOKEN")
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if not token and path and Path(path).is_file():
            token = Path(path).read_text().strip()
    if token:
        os.environ["RAY_AUTH_TOKEN"] = token
        os.environ.setdefault("RAY_AUTH_MODE", "token")


class RayGateway:
    def __init__(self, settings: RaySettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._actor_class = None

    def connect(self) -> None:
        import ray

        with self._lock:
            if ray.is_initialized():
                return
            configure_token_auth()
            ray.init(address=self.settings.address, namespace=self.settings.namespace,
                     log_to_driver=False, configure_logging=False)
            log.info("connected to Ray at %s", self.settings.address)

    def ensure_actor(self, spec: RunSpec) -> ActorRef:
        """The TaskRun's actor, started if it does not exist; its run loop is (re)joined idempotently."""
        import ray

        self.connect()
        ref = spec.taskrun
        name = actor_name(ref.namespace, ref.name, ref.uid)
        handle = self._remote_class().options(
            name=name, namespace=self.settings.namespace, lifetime="detached", get_if_exists=True,
            num_cpus=self.settings.actor_num_cpus, max_restarts=0,
        ).remote(spec)
        handle.run.remote()  # fire and forget: the actor reports through the TaskRun status
        return ActorRef(name=name, namespace=self.settings.namespace, id=handle._actor_id.hex())

    def _remote_class(self):
        import ray
        from actors.taskrun_actor import TaskRunActor

        if self._actor_class is None:
            self._actor_class = ray.remote(TaskRunActor)
        return self._actor_class
