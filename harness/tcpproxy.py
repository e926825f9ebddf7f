"""A TCP proxy in front of several replicas' webhook ports: the local stand-in for the operator's Service.

Like kube-proxy behind a Service it works per connection (L4: it never looks inside TLS), sends each new
connection to a ready backend (round robin), and learns readiness as the endpoints controller does, from each
backend's probe (GET /readyz over HTTPS, every PROBE_SECONDS). A backend that refuses the connection is skipped
for the next one. A connection already open to a backend that dies is closed, as a Service's would be.

It runs as its own process (`python -m harness.tcpproxy PORT BACKEND...`), as kube-proxy is not part of any
client: in the process of a test or a benchmark, its copying would compete for the GIL with their clients.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import threading
import time
from pathlib import Path

from .controlplane import exit_on_signals, free_ports, http_get, spawn, stop_process

PROBE_SECONDS = 0.2


class Proxy:
    def __init__(self, backends: list[int], host: str = "127.0.0.1"):
        self.backends, self.host = backends, host
        self.ready: set[int] = set()
        self._turn = itertools.count()

    def probe_forever(self) -> None:
        while True:
            for port in self.backends:
                try:
                    up = http_get(f"https://{self.host}:{port}/readyz", timeout=1)[0] == 200
                except OSError:
                    up = False
                (self.ready.add if up else self.ready.discard)(port)
            time.sleep(PROBE_SECONDS)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.close()  # no ready backend: the apiserver sees the webhook unreachable
            return
        up_reader, up_writer = upstream
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        ready = [p for p in self.backends if p in self.ready]
        start = next(self._turn)
        for i in range(len(ready)):
            try:
                return await asyncio.wait_for(asyncio.open_connection(self.host, ready[(start + i) % len(ready)]), 2)
            except (OSError, asyncio.TimeoutError):
                continue
        return None


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy bytes one way until either side closes, then close the sink (which ends the other direction too)."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


async def run(port: int, backends: list[int]) -> None:
    proxy = Proxy(backends)
    threading.Thread(target=proxy.probe_forever, daemon=True).start()
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", port, backlog=512)
    print(f"proxying 127.0.0.1:{port} to {backends}", flush=True)
    async with server:
        await server.serve_forever()


class TCPProxy:
    """The proxy's process, started by the harness."""

    def __init__(self, backends: list[int], log: Path):
        self.backends, self.log = backends, log
        (self.port,) = free_ports(1)
        self.proc = None

    def start(self) -> "TCPProxy":
        self.proc = spawn([sys.executable, "-m", "harness.tcpproxy", str(self.port), *map(str, self.backends)],
                          self.log, cwd=Path(__file__).resolve().parents[1])
        return self

    def stop(self) -> None:
        stop_process(self.proc, grace=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tcpproxy")
    parser.add_argument("port", type=int)
    parser.add_argument("backends", type=int, nargs="+")
    args = parser.parse_args(argv)
    exit_on_signals()
    asyncio.run(run(args.port, args.backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
