"""Sign-in attempts, limited per client address: a small token bucket each.

Every token the console has not seen lately costs a TokenReview on the apiserver, so random tokens sent to the
login form (or as a bearer header) would turn the console into a TokenReview flood. Each such check takes one
from the caller's bucket, and a token that turns out good gives it back: only failures use the bucket up, and a
user whose token is known (cached) is never held up. An empty bucket is a 429 without asking the apiserver.

The address is the connection's: X-Forwarded-For is not trusted (anyone can write it). Behind a proxy or
`kubectl port-forward` every caller shares the proxy's address, hence one bucket: a flood then blocks sign-ins
for a while, never the apiserver.
"""
from __future__ import annotations

import math
import time
from typing import Callable


class SignInLimited(Exception):
    """Too many failed sign-ins from this address: `retry_after` seconds until the next attempt is allowed."""

    def __init__(self, retry_after: float):
        super().__init__(f"too many failed sign-in attempts from your address: try again in "
                         f"{math.ceil(retry_after)} s")
        self.retry_after = retry_after


class SignInLimiter:
    """Token buckets by client address: `burst` attempts at once, refilled at `per_minute`."""

    def __init__(self, burst: int = 10, per_minute: float = 10.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.rate, self.max_clients, self.clock = burst, per_minute / 60.0, max_clients, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def take(self, client: str) -> None:
        """One attempt for `client`, or SignInLimited."""
        now = self.clock()
        tokens = self._tokens(client, now)
        if tokens < 1:
            raise SignInLimited((1 - tokens) / self.rate if self.rate > 0 else math.inf)
        if len(self._buckets) >= self.max_clients:  # forget the full buckets first: they are the default
            self._buckets = {c: b for c, b in self._buckets.items() if self._tokens(c, now) < self.burst}
            if len(self._buckets) >= self.max_clients:
                self._buckets.clear()
        self._buckets[client] = (tokens - 1, now)

    def give_back(self, client: str) -> None:
        """The attempt succeeded: it costs nothing."""
        now = self.clock()
        self._buckets[client] = (min(float(self.burst), self._tokens(client, now) + 1), now)
