"""The CLI's reader of a run's live stream (kubechain/operator/streams.py): server-sent events over HTTP, read in a
thread, each batch handed to a callback. It reconnects from its cursor when the connection drops (an operator
restart, a replica gone), so nothing is read twice; it stops at the `end` event, when stopped, or when refused
(401/403: the user may not `get` the run), saying why once on stderr. A 404 is a run not created yet (`run
--follow` starts following before the operator has made the Task's TaskRun): asked again.
"""
from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from kubechain.core.livestream import Cursor

RECONNECT_SECONDS = 0.5


def kubeconfig_token() -> str | None:
    """The bearer token of the kubeconfig's user (the stream is read with the user's own rights), or None (a
    client certificate, say: then the CLI follows checkpoints only)."""
    from kubernetes import client

    # The key's name moved between client releases ("authorization", then "BearerToken"): take whichever holds one.
    for auth in client.Configuration.get_default_copy().api_key.values():
        scheme, _, token = str(auth).partition(" ")
        if scheme.lower() == "bearer" and token:
            return token
    return None


class LiveFeed:
    def __init__(self, base_url: str, namespace: str, name: str, token: str,
                 on_batch: Callable[[dict[str, Any]], None]):
        self.url = f"{base_url.rstrip('/')}/streams/{urllib.parse.quote(namespace)}/{urllib.parse.quote(name)}"
        self.token, self.on_batch = token, on_batch
        self.cursor = Cursor()
        self.refused: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"live-{name}", daemon=True)

    def start(self) -> "LiveFeed":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._read() == "end":
                    return
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    self.refused = _message(exc)
                    print(f"live stream refused ({exc.code}): {self.refused}; following checkpoints only",
                          file=sys.stderr, flush=True)
                    return
            except (OSError, ValueError):  # the connection dropped (or the replica went): reconnect from the cursor
                pass
            self._stop.wait(RECONNECT_SECONDS)

    def _read(self) -> str | None:
        c = self.cursor
        query = urllib.parse.urlencode({"step": c.step, "source": c.source, "attempt": c.attempt, "offset": c.offset})
        request = urllib.request.Request(f"{self.url}?{query}", headers={"Authorization": f"Bearer {self.token}",
                                                                         "Accept": "text/event-stream"})
        with urllib.request.urlopen(request, timeout=60) as response:
            kind, data = "", []
            for raw in response:
                if self._stop.is_set():
                    return "end"
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    if kind == "end":
                        return "end"
                    if kind == "delta":
                        batch = json.loads("\n".join(data))
                        self.on_batch(batch)
                        self.cursor = Cursor().after(batch)
                    kind, data = "", []
        return None


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("message") or str(exc)
    except (ValueError, OSError, AttributeError):
        return str(exc)
