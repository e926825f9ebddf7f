"""A real Redis server (the Debian package's binary) for a Ray head to keep its GCS tables in, as the `gcs-ft` overlay
does (KubeRay points the head at it with RAY_REDIS_ADDRESS), and a small client that reads every key back.

The client speaks RESP itself (no `redis` package): a test needs only a few commands, byte for byte."""
from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.controlplane import StartupError, free_ports, spawn, stop_process, wait_until


def redis_binary() -> str | None:
    return shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server",) if Path(p).exists()), None)


class RedisError(RuntimeError):
    pass


class RespClient:
    """One connection, one command at a time; replies as bytes, ints, lists or None."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def command(self, *args: str | bytes | int) -> object:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return self._reply()

    def _reply(self) -> object:
        line = self.reader.readline()
        if not line:
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@dataclass
class Entry:
    """One Redis key: its type and every byte string it holds (a hash's fields and values, a list's items...)."""
    key: bytes
    type: str
    parts: list[bytes]

    def contains(self, needle: bytes) -> bool:
        return needle in self.key or any(needle in part for part in self.parts)


def read_everything(client: RespClient) -> list[Entry]:
    """Every key of every database (SCAN), read by its type."""
    entries = []
    databases = int(client.command("CONFIG", "GET", "databases")[1])
    for db in range(databases):
        client.command("SELECT", db)
        cursor = b"0"
        while True:
            cursor, keys = client.command("SCAN", cursor, "COUNT", 1000)
            for key in keys:
                kind = client.command("TYPE", key).decode()
                if kind == "string":
                    parts = [client.command("GET", key)]
                elif kind == "hash":
                    parts = client.command("HGETALL", key)
                elif kind == "list":
                    parts = client.command("LRANGE", key, 0, -1)
                elif kind == "set":
                    parts = client.command("SMEMBERS", key)
                elif kind == "zset":
                    parts = client.command("ZRANGE", key, 0, -1, "WITHSCORES")
                elif kind == "stream":
                    parts = [field for _id, fields in client.command("XRANGE", key, "-", "+") for field in fields]
                elif kind == "none":  # gone since SCAN saw it
                    continue
                else:
                    raise RedisError(f"key {key!r} has type {kind}, which this reader does not read")
                entries.append(Entry(key, kind, [p for p in parts if p is not None]))
            if cursor == b"0":
                break
    client.command("SELECT", 0)
    return entries


class LocalRedis:
    """`redis-server` on a free port of 127.0.0.1, its files in `workdir`, nothing saved to disk; stopped by PID."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """What RAY_REDIS_ADDRESS takes."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "LocalRedis":
        binary = redis_binary()
        if binary is None:
            raise StartupError("redis-server is not installed (apt-get install redis-server; `make test` does it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        [self.port] = free_ports(1)
        log = self.workdir / "redis.log"
        self.proc = spawn([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                           "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""], log,
                          cwd=self.workdir)
        wait_until(self._ready, timeout, "Redis", {"redis-server": (self.proc, log)})
        return self

    def _ready(self) -> bool:
        client = RespClient(self.port, timeout=1)
        try:
            return client.command("PING") == b"PONG"
        finally:
            client.close()

    def client(self) -> RespClient:
        return RespClient(self.port)

    def everything(self) -> list[Entry]:
        client = self.client()
        try:
            return read_everything(client)
        finally:
            client.close()

    def stop(self) -> None:
        stop_process(self.proc, 5)
        self.proc = None

    def __enter__(self) -> "LocalRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
