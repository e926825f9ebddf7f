"""The operator's only door to Ray: connect (with token auth) and start or find TaskRun actors.

Blocking (the Ray API is); controllers call it through asyncio.to_thread. Tests of handlers can
pass any object with the same methods.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from kubechain.api.codetools import CodeToolPolicy
from kubechain.api.runspec import KubeCredentials, RunSpec, TaskRunRef
from kubechain.api.v1alpha1 import ActorRef, MCPServer, MCPServerStatus
from kubechain.core.actorline import Waiter
from kubechain.core.naming import actor_name
from kubechain.operator.actorpool import STANDBY_PREFIX, ActorPool
from kubechain.operator.settings import RaySettings

log = logging.getLogger(__name__)
DISCOVERY_START_SECONDS = 60  # what a discovery task may take beyond its server's own limits: a worker's start


class ActorDied(Exception):
    """The actor process is gone (killed, crashed, node lost) before its run ended."""


class RayUnavailable(Exception):
    """Ray cannot be reached or refuses to create actors right now."""


class ActorUnresponsive(Exception):
    """The actor lives but has not answered a liveness ping for `wedged_seconds`: its event loop is blocked."""


class ActorGateway(Protocol):
    def find(self, ref: TaskRunRef, name: str | None = None) -> Any | None: ...
    def create(self, spec: RunSpec, waiter: Waiter | None = None) -> tuple[Any, ActorRef]: ...
    def join(self, handle: Any, spec: RunSpec | None = None) -> Any: ...
    async def wait(self, run: Any, handle: Any = None) -> str: ...
    def recycle(self, name: str, handle: Any) -> None: ...
    def renew(self, handle: Any, uid: str, kube: KubeCredentials) -> None: ...


def _detached(future: Any) -> asyncio.Future:
    """An asyncio view of Ray's concurrent future that can be cancelled without cancelling Ray's own:
    Ray Client's data thread crashes when it completes a future someone cancelled."""
    loop = asyncio.get_running_loop()
    view = loop.create_future()

    def transfer(done: Any) -> None:
        if not view.done():
            error = done.exception()
            view.set_exception(error) if error is not None else view.set_result(done.result())

    def on_done(done: Any) -> None:
        if not loop.is_closed():  # after the operator's loop stopped, nobody waits for it any more
            loop.call_soon_threadsafe(transfer, done)

    future.add_done_callback(on_done)
    return view


class Heartbeat:
    """Liveness pings of one actor, one out at a time: the actor's `ping()` is served by the event loop its run uses,
    so an answer says the loop turns. `overdue()` is how long the ping out has gone unanswered, once past `limit`.
    A ping goes out at most every `limit / 4` (one Ray call per run every 7.5 s by default, not every tick): a
    wedged actor is found within 1.25 x `limit`. The first ping gets STARTING x `limit`: it waits behind the actor's
    creation (a worker process start, which a busy node stretches), and replacing a slow starter only starts
    another. Once answered (at the run's first await, its checkpoint load), `limit` applies."""

    STARTING = 4

    def __init__(self, handle: Any, limit: float):
        self.handle, self.limit = handle, limit
        self._out: asyncio.Future | None = None
        self._sent = 0.0
        self._armed = False  # the actor answered once

    async def overdue(self) -> float | None:
        now = time.monotonic()
        if self._out is not None and not self._out.done():
            allowed = self.limit if self._armed else self.limit * self.STARTING
            return now - self._sent if now - self._sent > allowed else None
        if self._out is not None:
            self._armed |= self._out.exception() is None  # a failed ping (a dead actor): its run's future says so
            if now - self._sent < self.limit / 4:
                return None
        try:
            ref = await asyncio.to_thread(self.handle.ping.remote)  # Ray Client's .remote() is a blocking call
        except AttributeError:  # an actor started by an older operator has no ping: not watched
            self.handle = None
            return None
        self._out, self._sent = _detached(ref.future()), now
        return None

    def stop(self) -> None:
        if self._out is not None:
            self._out.cancel()


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
        self._probed: tuple[float, bool] = (0.0, False)  # (monotonic time, reachable) of the last probe
        self._actor_class = None
        self._discovery = None  # the stdio MCP discovery task (a Ray remote function), once asked for
        address = settings.address.removeprefix("ray://")
        self._endpoint = address if ":" in address else ""  # what reachable() probes; `auto` learns it on connect
        self._lost = False
        self.pool = ActorPool(settings, lambda name: self._new_actor(name, pooled=True))

    def connect(self, pool: bool = True) -> None:
        """Connect to Ray (idempotent). `pool`: also adopt the standby actors an earlier process left and fill the
        pool; a replica standing by for the Lease connects without (the pool is the leader's)."""
        import ray

        with self._lock:
            if self._lost:  # the head went away: drop the dead session once, then connect afresh
                ray.shutdown()
                self._lost = self.pool.adopted = False
            if not ray.is_initialized():
                self._connect()
            adopt = pool and self.pool.enabled and not self.pool.adopted
            if adopt:
                self.pool.adopt()
        if adopt:
            self.pool.refill()

    def _connect(self) -> None:
        import ray

        if self._endpoint and not self.reachable():  # fail fast instead of Ray Client's long retries
            raise RayUnavailable(f"the Ray head at {self._endpoint} does not answer")
        configure_token_auth()
        ray.init(address=self.settings.address, namespace=self.settings.namespace,
                 log_to_driver=False, configure_logging=False)
        if not self._endpoint:
            self._endpoint = ray.get_runtime_context().gcs_address
        self.pool.bound(ray.cluster_resources().get("CPU", 1))
        log.info("connected to Ray at %s", self.settings.address)

    def find(self, ref: TaskRunRef, name: str | None = None, pool: bool = True) -> Any | None:
        """(`pool`: as connect's; False for readers such as the live streams, which any replica serves.) The live actor of this TaskRun, if there is one: `name` as its status records it (a pooled actor's),
        else the run's own actor name. An actor counts only while it holds this run: a pooled one may hold another
        meanwhile, and one named after the run holds none when the operator that created it died (or lost the
        Lease) before handing it the run; the next `create` finds that actor (get_if_exists) and hands it over."""
        import ray

        self._connect_or_raise(pool)
        try:
            handle = ray.get_actor(name or actor_name(ref.namespace, ref.name, ref.uid), namespace=self.settings.namespace)
        except ValueError:
            return None
        return handle if self._holds(handle, ref.uid) else None

    def create(self, spec: RunSpec, waiter: Waiter | None = None) -> tuple[Any, ActorRef]:
        """An actor for the run, `waiter` its granted place in the actor line (actorpool.py `ask`; None: asks now,
        and raises RayUnavailable if it would wait). With a pool (`standby_actors`): a pooled one, warm if one was
        free, and `join(handle, spec)` gives it the run. Without: a new one named after the run (get_if_exists: a
        racing duplicate request finds the same actor), given its run by `join` too."""
        try:
            self._connect_or_raise()
        except RayUnavailable:
            if waiter is not None:
                self.pool.withdraw(waiter)  # what it was granted goes on: this run will ask again
            raise
        if waiter is None and not (waiter := self.pool.ask(spec.taskrun.namespace, 0, lambda: None)).granted:
            self.pool.withdraw(waiter)
            raise RayUnavailable("every actor start is taken (KUBECHAIN_MAX_ACTOR_STARTS)")
        if (taken := self.pool.take(waiter)) is not None:
            name, handle = taken
        else:  # a start slot: the pool's watch frees it once the actor answers
            own = actor_name(spec.taskrun.namespace, spec.taskrun.name, spec.taskrun.uid)
            try:
                name, handle = self.pool.new_standby() if self.pool.enabled else (own, self._new_actor(own, False))
            except RayUnavailable:
                self.pool.start_ended()
                raise
            self.pool.watch_start(handle)
        return handle, ActorRef(name=name, namespace=self.settings.namespace, id=handle._actor_id.hex(),
                                restarts=max(spec.epoch - 1, 0))

    def join(self, handle: Any, spec: RunSpec | None = None) -> Any:
        """Start or join the actor's run loop (idempotent); returns the future of its final phase. `spec` assigns
        a standby to the run; without it, an actor that holds no run (or another) fails the future (ActorDied)."""
        return handle.run.remote(spec)

    def _new_actor(self, name: str, pooled: bool) -> Any:
        """A detached actor with no run yet: `join` hands it its RunSpec. Ray keeps a detached actor's constructor
        arguments in the GCS (in Redis with gcs-ft) for as long as the actor lives; a method call's arguments are
        not kept, so the run's secrets (API key, tool headers) never reach Ray's tables."""
        try:
            return self._remote_class().options(
                name=name, namespace=self.settings.namespace, lifetime="detached", get_if_exists=True,
                num_cpus=self.settings.actor_num_cpus, max_restarts=0,
                scheduling_strategy=self.settings.scheduling_strategy,
            ).remote(pooled=pooled)
        except Exception as exc:
            raise RayUnavailable(f"cannot create actor {name}: {exc}") from exc

    def renew(self, handle: Any, uid: str, kube: KubeCredentials) -> None:
        """Hand the actor of run `uid` a fresh token (kubechain/operator/credentials.py). Raises when it does not
        answer in time (its wait notices a dead actor)."""
        import ray

        ray.get(handle.renew.remote(uid, kube), timeout=10)

    def recycle(self, name: str, handle: Any) -> None:
        """A pooled actor whose run has ended goes back to the pool (actorpool.py)."""
        self.pool.recycle(name, handle)

    def _holds(self, handle: Any, uid: str | None = None) -> bool:
        """Whether a pooled actor holds run `uid` (any run, without it); an actor that cannot say is dead."""
        import ray

        try:
            return ray.get(handle.holds.remote(uid), timeout=10)
        except ray.exceptions.GetTimeoutError:
            return True  # alive but busy: it may well hold the run
        except Exception:
            return False

    async def wait(self, run: Any, handle: Any = None) -> str:
        """The final phase the actor returns. ActorDied when its process went away first (Ray fails the
        future at once); RayUnavailable when the head itself is gone (Ray would hang: we probe it);
        ActorUnresponsive when the actor (`handle`, if given) stops answering liveness pings."""
        import ray

        result = _detached(run.future())
        heartbeat = Heartbeat(handle, self.settings.wedged_seconds)
        try:
            while not (await asyncio.wait({result}, timeout=self.settings.health_interval_seconds))[0]:
                if not await asyncio.to_thread(self.reachable):
                    raise RayUnavailable(f"the Ray head at {self._endpoint} stopped answering")
                if heartbeat.handle is not None and (silent := await heartbeat.overdue()) is not None:
                    raise ActorUnresponsive(
                        f"the actor has not answered a liveness ping for {silent:.0f} s (the operator's "
                        f"KUBECHAIN_ACTOR_WEDGED_SECONDS is {self.settings.wedged_seconds:g}): its event loop is blocked")
            return result.result()
        except ray.exceptions.RayActorError as exc:
            raise ActorDied(str(exc).splitlines()[0]) from None
        except ray.exceptions.RayError as exc:  # e.g. the loop raised: the actor restarts from its checkpoint
            raise ActorDied(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        except ConnectionError as exc:  # Ray Client lost its server: the head (or the proxy) is gone
            raise RayUnavailable(f"lost the connection to Ray: {str(exc).splitlines()[0]}") from None
        finally:
            result.cancel()
            heartbeat.stop()

    def reachable(self) -> bool:
        """A TCP connect to the address we reached Ray at: cheap, and cannot hang like a Ray call can. One probe
        answers every supervisor asking within a second."""
        at, answer = self._probed
        if time.monotonic() - at < 1.0:
            return answer
        host, _, port = self._endpoint.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            answer = True
        except (OSError, ValueError):
            answer = False
        self._probed = (time.monotonic(), answer)
        return answer

    def kill(self, namespace: str, name: str, uid: str, actor: str | None = None) -> None:
        """Stop a TaskRun's actor, if it lives (its TaskRun is gone or stopped): `actor` as its status records
        it (a pooled actor, if it still holds this run), and the run's own actor name."""
        import ray

        self._connect_or_raise()
        for candidate in {actor or "", actor_name(namespace, name, uid)} - {""}:
            try:
                handle = ray.get_actor(candidate, namespace=self.settings.namespace)
            except ValueError:
                continue
            if not candidate.startswith(STANDBY_PREFIX) or self._holds(handle, uid):
                ray.kill(handle)

    def discover_stdio(self, server: MCPServer, secrets: dict[str, str], code_tools: CodeToolPolicy) -> MCPServerStatus:
        """A stdio MCP server's discovery as a Ray task on a worker (actors/tools/mcp_discovery.py, which checks
        `code_tools` before it starts anything): the operator's process never starts one. It reserves what an
        actor does (so never the head of a KubeRay cluster, whose num-cpus is 0). Raises RayUnavailable, or
        TimeoutError when the task did not answer in time (then it is cancelled)."""
        import ray
        from actors.tools.mcp_discovery import discover_stdio

        self._connect_or_raise()
        if self._discovery is None:
            self._discovery = ray.remote(discover_stdio)
        ref = self._discovery.options(num_cpus=self.settings.actor_num_cpus, max_retries=0,
                                      name=f"mcp-discovery:{server.name}").remote(server, secrets, code_tools)
        try:
            return ray.get(ref, timeout=server.timeout_seconds * 2 + DISCOVERY_START_SECONDS)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            raise TimeoutError(f"the discovery task did not answer within "
                               f"{server.timeout_seconds * 2 + DISCOVERY_START_SECONDS:g} s") from None
        except ray.exceptions.RayError as exc:
            raise RayUnavailable(f"the discovery task failed: {str(exc).splitlines()[0]}") from None

    async def stream_since(self, handle: Any, uid: str, cursor: Any, wait: float) -> dict | None:
        """The open step's stream past `cursor` (kubechain/core/livestream.py), long-polled by the actor up to
        `wait` s: one Ray call per batch of deltas, however many tokens it carries. None: the actor does not hold run
        `uid` (a pooled actor moved on, or it predates streaming). Raises ActorDied when it is gone."""
        import ray

        try:
            ref = await asyncio.to_thread(handle.stream_since.remote, uid, cursor.step, cursor.source,
                                          cursor.attempt, cursor.offset, wait)
        except AttributeError:
            return None
        try:
            return await asyncio.wait_for(_detached(ref.future()), timeout=wait + 15)
        except (ray.exceptions.RayError, ConnectionError, asyncio.TimeoutError) as exc:
            raise ActorDied(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None

    def disconnect(self) -> None:
        """Mark the session dead, so the next call connects afresh (e.g. to a restarted head)."""
        self._lost = True

    def _connect_or_raise(self, pool: bool = True) -> None:
        try:
            self.connect(pool)
        except RayUnavailable:
            raise
        except Exception as exc:
            raise RayUnavailable(f"Ray at {self.settings.address} is unreachable: {exc}") from exc

    def _remote_class(self):
        import ray
        from actors.taskrun_actor import TaskRunActor

        if self._actor_class is None:
            self._actor_class = ray.remote(TaskRunActor)
        return self._actor_class
