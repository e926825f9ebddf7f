"""A TCP proxy in front of several replicas' webhook ports: the local stand-in for the operator's Service.

Like kube-proxy behind a Service it works per connection (L4: it never looks inside TLS), sends each new
connection to a ready backend (round robin), and learns readiness as the endpoints controller does, from each
backend's probe (GET /readyz over HTTPS, every PROBE_SECONDS). A backend that refuses the connection is skipped
for the next one. A connection already open to a backend that dies is closed, as a Service's would be.
"""
from __future__ import annotations

import itertools
import socket
import threading
import time

from .controlplane import http_get

PROBE_SECONDS = 0.2


class TCPProxy:
    def __init__(self, backends: list[int], host: str = "127.0.0.1"):
        self.backends, self.host = backends, host
        self.ready: set[int] = set()
        self.connections = 0
        self._turn = itertools.count()
        self._stopped = threading.Event()
        self._listener = socket.create_server((host, 0), backlog=512)
        self.port = self._listener.getsockname()[1]

    def start(self) -> "TCPProxy":
        threading.Thread(target=self._probe_forever, name="proxy-probe", daemon=True).start()
        threading.Thread(target=self._accept_forever, name="proxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()

    def _probe_forever(self) -> None:
        while not self._stopped.is_set():
            for port in self.backends:
                try:
                    up = http_get(f"https://{self.host}:{port}/readyz", timeout=1)[0] == 200
                except OSError:
                    up = False
                (self.ready.add if up else self.ready.discard)(port)
            time.sleep(PROBE_SECONDS)

    def _accept_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            client.close()  # no ready backend: the apiserver sees the webhook unreachable
            return
        self.connections += 1
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def _connect(self) -> socket.socket | None:
        ready = [p for p in self.backends if p in self.ready]
        if not ready:
            return None
        start = next(self._turn)
        for i in range(len(ready)):
            try:
                return socket.create_connection((self.host, ready[(start + i) % len(ready)]), timeout=2)
            except OSError:
                continue
        return None


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes, then shut both down (which ends the other direction's pump)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for s in (source, sink):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
