"""The pool of warm TaskRun actors (KUBECHAIN_STANDBY_ACTORS): actors holding no run, that a new run takes instead
of waiting for a Ray worker process start (~1 s of CPU, importing the openai SDK).

- **standbys**: up to `standby_actors` kept warm; a run that takes one has it replaced `standby_refill_seconds`
  later, unless an ended run's actor came back meanwhile (`refill`).
- **recycle**: a pooled actor whose run ended comes back. Beyond `standby_actors` it lingers
  `standby_linger_seconds` for the next run, then ends (`trim`), as a thread pool's threads above its core size do.
- **adopt**: the standbys an earlier operator process left (detached actors outlive it), if no run holds them.
- **the line** (kubechain/core/actorline.py): at most `max_actor_starts` actor processes start at once (the pool's
  refills included); a run that finds no free pooled actor and no free start waits (`ask`), and the first ended
  run's actor to come back or start slot to free is handed to it directly (`wake`), in the line's order. A start
  holds its slot until the new actor answers its first ping (its imports done), or `start_timeout` passed.

Blocking (the Ray API is), thread-safe; the Ray gateway (raygateway.py) is the only user: it starts the actors.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubechain.core.actorline import SLOT, ActorLine, Waiter
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
        self.line = ActorLine(settings.max_actor_starts or 1)  # its limit is set again once connected (`bound`)
        self._standbys: list[Pooled] = self.line.free  # warm actors holding no run (the line hands them out)
        self._idle_since: dict[str, float] = {}  # monotonic time each pooled actor came back (lingering ones end)
        self._returned_at = 0.0  # monotonic time an ended run's actor last came back to the pool
        self._trimming = False  # a trim timer is set
        self.adopted = False  # the standbys were adopted on this Ray connection
        self.start_timeout = 4 * settings.wedged_seconds  # as the heartbeat's first ping: a start may be this slow

    def bound(self, cpus: float) -> None:
        """Once connected: `max_actor_starts`, or (0) the Ray cluster's CPUs, at least 1 (a start is CPU-bound)."""
        with self._lock:
            self.line.limit = self.settings.max_actor_starts or max(1, int(cpus))

    @property
    def enabled(self) -> bool:
        return bool(self.settings.standby_actors)

    def idle(self) -> int:
        """Pooled actors holding no run."""
        with self._lock:
            return len(self._standbys)

    def adopt(self) -> None:
        """Take over the standbys an earlier process left (once per Ray connection); `refill` then fills the pool."""
        adopted = self._adopt_standbys()
        with self._lock:
            self._standbys[:] = adopted
        self.adopted = True

    def ask(self, namespace: str, priority: int, wake: Callable[[], None]) -> Waiter:
        """A run's place in the line: granted at once (`waiter.granted`) or later, when `wake()` is called (from
        whichever thread freed what it gets). Never blocks on Ray: callable from the operator's event loop."""
        waiter = Waiter(namespace, priority, context=wake)
        with self._lock:
            self.line.ask(waiter)
        return waiter

    def withdraw(self, waiter: Waiter) -> None:
        """The run no longer waits (its supervisor stopped): what it was granted and did not take goes on."""
        with self._lock:
            woken = self.line.withdraw(waiter)
        _wake(woken)

    def take(self, waiter: Waiter) -> Pooled | None:
        """What a granted run gets: a pooled actor, or None: a start slot (the caller starts a process and calls
        `watch_start`, or `start_ended` if it failed). A pooled actor taken is replaced later (`refill`)."""
        with self._lock:
            assert waiter.granted, "taken before it was granted"
            waiter.granted, taken = False, waiter.actor  # taken: a withdraw gives nothing back
            if taken is not SLOT:
                self._idle_since.pop(taken[0], None)
        if self.enabled:
            refill = threading.Timer(self.settings.standby_refill_seconds, self.refill)
            refill.daemon = True
            refill.start()
        return taken

    def watch_start(self, handle: Any) -> None:
        """Hold the start's slot until the new actor answers a ping (Ray runs it after the constructor, so after
        the process started and imported its modules) or fails, at most `start_timeout`."""
        ended, once = threading.Event(), threading.Lock()
        timer = threading.Timer(self.start_timeout, lambda: finished(None))

        def finished(_: Any) -> None:  # a Ray future's callback (Ray Client's data thread), or the timer's
            with once:
                if ended.is_set():
                    return
                ended.set()
            timer.cancel()
            self.start_ended()

        timer.daemon = True
        timer.start()
        try:
            handle.ping.remote().future().add_done_callback(finished)
        except Exception as exc:  # cannot tell when it is up: the slot is not held on a guess
            log.info("actor start not watched: %s", exc)
            finished(None)

    def start_ended(self) -> None:
        """A start finished (or failed): its slot goes to the run first in line, or frees."""
        with self._lock:
            woken = self.line.started()
        _wake(woken)

    def starts(self) -> tuple[int, int, int]:
        """(starts in flight, their limit, runs waiting in the line)."""
        with self._lock:
            return self.line.starting, self.line.limit, self.line.waiting()

    def recycle(self, name: str, handle: Any) -> None:
        """A pooled actor whose run has ended goes back to the pool. Beyond `standby_actors` it lingers there for
        `standby_linger_seconds` (a burst's queued runs take it instead of starting a process each, ~1 s of CPU),
        then ends, as a thread pool's threads above its core size do."""
        import ray

        if not name.startswith(STANDBY_PREFIX):
            return  # named after its run: it ends with it
        with self._lock:  # a run waiting in the line takes it, linger or not
            surplus = len(self._standbys) >= self.settings.standby_actors and not self.line.waiting()
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
            self._returned_at = time.monotonic()
            if (woken := self.line.returned((name, handle))) is None:  # nobody waits: pooled
                self._idle_since[name] = self._returned_at
            surplus = len(self._standbys) > self.settings.standby_actors
        _wake(woken)
        if woken is None and surplus:
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
                while True:
                    with self._lock:  # a start slot of its own, only when no run waits for one
                        if len(self._standbys) >= self.settings.standby_actors or not self.line.try_slot():
                            return
                    try:
                        name, handle = self.new_standby()
                    except Exception:
                        self.start_ended()
                        raise
                    self.watch_start(handle)
                    with self._lock:
                        woken = self.line.returned((name, handle))
                    _wake(woken)
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


def _wake(waiter: Waiter | None) -> None:
    """Tell a run waiting in the line that it was granted (outside the pool's lock)."""
    if waiter is not None and waiter.context is not None:
        waiter.context()
