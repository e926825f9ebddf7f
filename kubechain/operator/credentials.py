"""The Kubernetes credentials of TaskRun actors: one ServiceAccount per namespace, short-lived tokens per run.

Ray workers are shared by every namespace, so their own identity has no rights (kuberay/base/ray-rbac.yaml). The
operator keeps, in each namespace with runs, a `kubechain-actor` ServiceAccount bound to the `kubechain-actor`
ClusterRole (its TaskRuns' status, their chunk ConfigMaps, Events: the RoleBinding grants them in that namespace
only), and hands each run's actor a TokenRequest token for it with the run (RunSpec.kube). While it supervises the
run it hands a fresh one once half of the token's life has passed; a pooled actor drops the token with the run. So
an actor (or code that reaches into its process) can write nothing outside its run's namespace, and a stolen
token stops working within KUBECHAIN_ACTOR_TOKEN_SECONDS of the run's end.

The runs of a namespace share the token minted last while it has more than half its life left: a burst of a
thousand runs costs one TokenRequest, not a thousand.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from pydantic import SecretStr

from kubechain.api.runspec import KubeCredentials, TaskRunRef
from kubechain.core.naming import ACTOR_ACCOUNT

from .kube import Kube

log = logging.getLogger(__name__)
RETRY_SECONDS = 30.0  # a renewal that failed (apiserver away, actor busy) is tried again this soon


class ActorCredentials:
    def __init__(self, kube: Kube, seconds: int, clock: Callable[[], float] = time.time):
        self._kube, self.seconds, self._clock = kube, seconds, clock
        self._tokens: dict[str, KubeCredentials] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._connection: tuple[str, str | None, bool] | None = None

    async def issue(self, namespace: str) -> KubeCredentials:
        """Credentials for a run of `namespace`: the namespace's current token, or a new one."""
        async with self._locks.setdefault(namespace, asyncio.Lock()):
            current = self._tokens.get(namespace)
            if current is not None and self._clock() < self.renew_at(current):
                return current
            fresh = await self._mint(namespace)
            self._tokens[namespace] = fresh
            return fresh

    def renew_at(self, kube: KubeCredentials) -> float:
        """When a holder of `kube` should get a fresh token: half of the lifetime before it expires."""
        return kube.expires_at - self.seconds / 2

    async def _mint(self, namespace: str) -> KubeCredentials:
        # Made sure of at every mint (two creates answered 409, once per half lifetime per namespace), so an account
        # or binding someone deleted is back before the next token is handed out.
        await self._kube.ensure_actor_account(namespace)
        issued = await self._kube.account_token(namespace, ACTOR_ACCOUNT, self.seconds)
        if issued is None:
            raise RuntimeError(f"ServiceAccount {namespace}/{ACTOR_ACCOUNT} was deleted as it was made")
        if self._connection is None:
            self._connection = self._kube.connection()
        server, ca, insecure = self._connection
        token, expires_at = issued
        return KubeCredentials(server=server, token=SecretStr(token), ca_data=ca, insecure=insecure,
                               expires_at=expires_at)


async def keep_renewed(credentials: ActorCredentials, ray: Any, handle: Any, ref: TaskRunRef,
                       held: KubeCredentials | None) -> None:
    """While the supervisor waits on the run: hand its actor a fresh token before the one it holds (`held`; None
    when joining an actor started before, whose token is unknown: at once) expires. Runs until cancelled."""
    due = credentials.renew_at(held) if held is not None else 0.0
    while True:
        await asyncio.sleep(max(due - time.time(), 0))
        try:
            fresh = await credentials.issue(ref.namespace)
            await asyncio.to_thread(ray.renew, handle, ref.uid, fresh)
            due = credentials.renew_at(fresh)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the apiserver or the actor away: its run's wait notices a dead actor
            log.warning("TaskRun %s/%s: token not renewed (%s); trying again in %g s", ref.namespace, ref.name,
                        exc, RETRY_SECONDS)
            due = time.time() + RETRY_SECONDS
