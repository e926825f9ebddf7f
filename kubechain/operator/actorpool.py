"""The pool of warm TaskRun actors (KUBECHAIN_STANDBY_ACTORS): actors holding no run, that a new run takes instead
of waiting for a Ray worker process start (~1 s of CPU, importing the openai SDK).

- **standbys**: up to `standby_actors` kept warm; a run that takes one has it replaced `standby_refill_seconds`
  later, unless an ended run's actor came back meanwhile (`refill`).
- **recycle**: a pooled actor whose run ended comes back. Beyond `standby_actors` it lingers
  `standby_linger_seconds` for the next run, then ends (`trim`), as a thread pool's threads above its core size do.
- **adopt**: the standbys an earlier operator process left (detached actors outlive it), if no run holds them.

Blocking (the Ray API is), thread-safe; the Ray gateway (raygateway.py) is the only user: it starts the actors.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable

from kubechain.operator.settings import RaySettings

log = logging.getLogger(__name__)
STANDBY_PREFIX = "kubechain-standby-"

Pooled = tuple[str, Any]  # (actor name, handle)


class ActorPool:
    def __init__(self, settings: RaySettings, start: Callable[[str], Any]):
        """`start(name)`: a new pooled actor's handle (raises RayUnavailable)."""
        self.settings, self._start = settings, start
        self._lock = threading.Lock()
        self._refilling = threading.Lock()
        self._standbys: list[Pooled] = []  # warm actors holding no run
        self._idle_since: dict[str, float] = {}  # monotonic time each pooled actor came back (lingering ones end)
        self._returned_at = 0.0  # monotonic time an ended run's actor last came back to the pool
        self._trimming = False  # a trim timer is set
        self.adopted = False  # the standbys were adopted on this Ray connection

    @property
    def enabled(self) -> bool:
        return bool(self.settings.standby_actors)

    def idle(self) -> int:
        """Pooled actors holding no run."""
        with self._lock:
            return len(self._standbys)

    def adopt(self) -> None:
        """Take over the standbys an earlier process left (once per Ray connection); `refill` then fills the pool."""
        self._standbys, self.adopted = self._adopt_standbys(), True

    def take(self) -> Pooled:
        """A pooled actor for a run: a warm one if there is one (replaced later), else a new one."""
        with self._lock:
            taken = self._standbys.pop(0) if self._standbys else None
            if taken is not None:
                self._idle_since.pop(taken[0], None)
        refill = threading.Timer(self.settings.standby_refill_seconds, self.refill)
        refill.daemon = True
        refill.start()
        return taken or self.new_standby()

    def recycle(self, name: str, handle: Any) -> None:
        """A pooled actor whose run has ended goes back to the pool. Beyond `standby_actors` it lingers there for
        `standby_linger_seconds` (a burst's queued runs take it instead of starting a process each, ~1 s of CPU),
        then ends, as a thread pool's threads above its core size do."""
        import ray

        if not name.startswith(STANDBY_PREFIX):
            return  # named after its run: it ends with it
        surplus = len(self._standbys) >= self.settings.standby_actors
        try:
            if surplus and self.settings.standby_linger_seconds <= 0:
                ray.kill(handle)
                return
            if not ray.get(handle.recycle.remote(), timeout=10):
                return
        except Exception as exc:  # gone, or stuck (then it ends itself once its grace is over)
            log.info("actor %s not recycled: %s", name, exc)
            return
        with self._lock:
            self._standbys.append((name, handle))
            self._returned_at = self._idle_since[name] = time.monotonic()
        if surplus:
            self._trim_in(self.settings.standby_linger_seconds)

    def _trim_in(self, seconds: float) -> None:
        """One trim timer at a time (a burst returns hundreds of actors: not a thread each)."""
        with self._lock:
            if self._trimming:
                return
            self._trimming = True
        trim = threading.Timer(seconds, self._trim)
        trim.daemon = True
        trim.start()

    def _trim(self) -> None:
        """End the pooled actors beyond `standby_actors` that stayed idle for `standby_linger_seconds`; come back
        when the next one's time is up, while there are such actors."""
        import ray

        now, ended, next_in = time.monotonic(), [], None
        with self._lock:
            self._trimming = False
            while len(self._standbys) > self.settings.standby_actors:
                oldest = min(self._standbys, key=lambda s: self._idle_since.get(s[0], 0.0))
                idle = now - self._idle_since.get(oldest[0], 0.0)
                if idle < self.settings.standby_linger_seconds:
                    next_in = self.settings.standby_linger_seconds - idle
                    break
                self._standbys.remove(oldest)
                self._idle_since.pop(oldest[0], None)
                ended.append(oldest[1])
        if next_in is not None:
            self._trim_in(next_in)
        for handle in ended:
            try:
                ray.kill(handle)
            except Exception as exc:  # gone already
                log.info("lingering actor not ended: %s", exc)

    def refill(self) -> None:
        """Top the pool up to `standby_actors` warm actors (a new run's actor then skips a worker process start,
        ~1 s), without holding the pool's lock: creating an actor can take seconds on a busy Ray, and every
        take and recycle would wait for it."""
        if time.monotonic() - self._returned_at < self.settings.standby_refill_seconds:
            return  # ended runs' actors are coming back: they refill the pool
        try:
            with self._refilling:
                while len(self._standbys) < self.settings.standby_actors:
                    standby = self.new_standby()
                    with self._lock:
                        self._standbys.append(standby)
        except Exception as exc:  # Ray away: the next run's create tries again
            log.info("standby actors not refilled: %s", exc)

    def new_standby(self) -> Pooled:
        name = f"{STANDBY_PREFIX}{uuid.uuid4().hex[:12]}"
        return name, self._start(name)

    def _adopt_standbys(self) -> list[Pooled]:
        import ray

        found = []
        for name in ray.util.list_named_actors():  # in our Ray namespace
            if name.startswith(STANDBY_PREFIX):
                try:
                    handle = ray.get_actor(name, namespace=self.settings.namespace)
                    if ray.get(handle.holds.remote(), timeout=10) is False:
                        found.append((name, handle))
                except Exception:  # gone meanwhile, or not answering: not worth keeping
                    continue
        for _, extra in found[self.settings.standby_actors:]:  # the pool is smaller now
            ray.kill(extra)
        return found[:self.settings.standby_actors]
