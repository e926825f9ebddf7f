"""Fault injection for the durability tests: kill actors, count side effects outside the actor."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def actors(stack) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{stack.ray.dashboard_url}/api/v0/actors?limit=10000",
                                     headers={"Authorization": f"Bearer {stack.ray.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]["result"]["result"]


def actor_pid(stack, name: str, timeout: float = 20) -> int:
    """The worker process of the live actor `name`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [a for a in actors(stack) if a.get("name") == name and a["state"] == "ALIVE" and a.get("pid")]
        if alive:
            return alive[0]["pid"]
        time.sleep(0.05)
    raise AssertionError(f"no live actor {name}")


def kill_actor(stack, name: str) -> int:
    pid = actor_pid(stack, name)
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_until(predicate, timeout: float = 30, what: str = ""):
    """The predicate's first truthy value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


class EffectCounter:
    """An HTTP service with side effects: it records every POST and de-duplicates by Idempotency-Key,
    like a real payment or ticketing API would. `hold(n)` delays the response to the n-th POST until
    `release()`, so a test can kill the actor while a call is in flight."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._hold_at: int | None = None
        self._hold_seconds = 30.0
        self.held = threading.Event()
        self._release = threading.Event()
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                counter.posts.append({"key": self.headers.get("Idempotency-Key"), "body": json.loads(body or b"{}")})
                if counter._hold_at == len(counter.posts):
                    counter.held.set()
                    counter._release.wait(counter._hold_seconds)
                reply = f"ok {json.dumps(counter.posts[-1]['body'], sort_keys=True)}".encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:  # the caller was killed meanwhile
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def hold(self, nth_post: int, seconds: float = 30) -> None:
        self._hold_at, self._hold_seconds = nth_post, seconds

    def release(self) -> None:
        self._release.set()

    def of(self, uid: str) -> list[dict[str, Any]]:
        """The POSTs made for one TaskRun (idempotency keys start with its uid)."""
        return [p for p in self.posts if p["key"].startswith(uid)]

    def close(self) -> None:
        self.release()
        self._server.shutdown()
