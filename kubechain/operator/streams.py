"""Live streams of runs' open steps: `GET /streams/{namespace}/{name}` (server-sent events) on
KUBECHAIN_STREAM_PORT, for `kubechain follow` and the console's run page.

Why here: the answer forms inside the run's actor (actors/livestream.py), which only Ray can reach, and the
operator is the one component with a Ray connection (the console talks only to the apiserver; a user's CLI can
reach neither Ray nor the actors). Each replica serves it (a standby's Ray connection too), so it needs no Lease.

Access is what kubectl would allow: the request's bearer token is the user's own, and the run is read with it from
the apiserver (`get` on the TaskRun, as the console's pages read it): the apiserver's 401/403/404 is the answer,
with its message, and no stream. The read is repeated every RECHECK_SECONDS, so a revoked right ends the stream.

Events: `run` (the run's uid, phase and step as read), `delta` (a batch: kubechain/core/livestream.py
`LiveStream.since`), `end` (the run ended; the client reads the checkpoint). Comments keep the connection alive.
Per batch the cost is one Ray call, long-polled in the actor (it returns as soon as a delta arrives, so a
batch carries whatever came while the previous one travelled), and one write per client; nothing per token
reaches the apiserver.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from typing import Any

import aiohttp
from aiohttp import web

from kubechain.api.runspec import TaskRunRef
from kubechain.api.v1alpha1 import GROUP, VERSION, Phase, TaskRunStatus
from kubechain.core.livestream import Cursor

from .raygateway import ActorDied, RayGateway, RayUnavailable

log = logging.getLogger(__name__)
RECHECK_SECONDS = 30.0  # the user's right to `get` the run is asked again this often while a stream lasts
POLL_SECONDS = 10.0  # the longest a long-poll Ray call waits for a delta (then a keep-alive comment)
IDLE_SECONDS = (0.5, 5.0)  # between looks for the run's actor while it has none: a Running run's (its actor is
# starting or restarting) every 0.5 s; a waiting run's (paused for a human, delegating) doubling to 5 s, so one
# paused for hours costs a read as its user every 5 s


class UserReads:
    """Reads of the apiserver with a user's own bearer token (never the operator's rights)."""

    def __init__(self) -> None:
        from kubernetes import client

        config = client.Configuration.get_default_copy()  # loaded by the operator's Kube(): in-cluster or kubeconfig
        self.host = config.host.rstrip("/")
        self.ssl: ssl.SSLContext | bool = False
        if self.host.startswith("https"):
            self.ssl = ssl.create_default_context(cafile=config.ssl_ca_cert) if config.ssl_ca_cert else \
                ssl.create_default_context()
            if not config.verify_ssl:
                self.ssl = False
        self._session: aiohttp.ClientSession | None = None

    async def taskrun(self, token: str, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of `kubectl get taskrun` as the token's user."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        url = f"{self.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/taskruns/{name}"
        async with self._session.get(url, headers={"Authorization": f"Bearer {token}"}, ssl=self.ssl) as answer:
            try:
                body = await answer.json(content_type=None)
            except ValueError:
                body = {"message": await answer.text()}
            return answer.status, body if isinstance(body, dict) else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _cursor(query: Any) -> Cursor:
    try:
        return Cursor(int(query.get("step", 0)), query.get("source", ""), int(query.get("attempt", 0)),
                      int(query.get("offset", 0)))
    except ValueError:
        raise web.HTTPBadRequest(text="step, attempt and offset are integers") from None


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class StreamServer:
    def __init__(self, ray: RayGateway, reads: UserReads, max_streams: int):
        self.ray, self.reads = ray, reads
        self._slots = asyncio.Semaphore(max_streams)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        token = bearer(request)
        if token is None:
            raise web.HTTPUnauthorized(text="a bearer token is needed: the stream is read with your own rights")
        cursor = _cursor(request.query)
        try:
            status, obj = await self.reads.taskrun(token, namespace, name)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # refuse: nothing is shown unchecked
            raise web.HTTPServiceUnavailable(text=f"cannot read the run as you from the apiserver: {exc}") from None
        if status != 200:
            return web.json_response({"message": obj.get("message", f"HTTP {status}")}, status=status)
        if self._slots.locked():
            raise web.HTTPServiceUnavailable(text="too many live streams on this replica (KUBECHAIN_MAX_STREAMS)")
        async with self._slots:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                   "X-Accel-Buffering": "no"})
            await response.prepare(request)
            try:
                await self._follow(response, token, obj, cursor)
            except (ConnectionResetError, asyncio.CancelledError):
                pass  # the client went away
            return response

    async def _follow(self, response: web.StreamResponse, token: str, obj: dict[str, Any], cursor: Cursor) -> None:
        meta = obj["metadata"]
        ref = TaskRunRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
        run = TaskRunStatus.model_validate(obj.get("status") or {})
        await response.write(_event("run", {"uid": ref.uid, "phase": run.phase.value, "step": run.step}))
        handle, checked, idle = None, time.monotonic(), IDLE_SECONDS[0]
        while True:
            if time.monotonic() - checked > RECHECK_SECONDS or (handle is None and not run.phase.terminal):
                status, obj = await self.reads.taskrun(token, ref.namespace, ref.name)
                if status != 200 or obj["metadata"]["uid"] != ref.uid:
                    await response.write(_event("end", {"reason": obj.get("message", f"HTTP {status}")}))
                    return
                run, checked = TaskRunStatus.model_validate(obj.get("status") or {}), time.monotonic()
            if run.phase.terminal:
                await response.write(_event("end", {"phase": run.phase.value}))
                return
            if handle is None:
                handle = await self._actor(ref, run)
                if handle is None:  # starting, restarting, or waiting (no actor while paused or delegating)
                    await response.write(b": no actor now\n\n")
                    await asyncio.sleep(idle)
                    idle = IDLE_SECONDS[0] if run.phase is Phase.RUNNING else min(IDLE_SECONDS[1], idle * 2)
                    continue
                idle = IDLE_SECONDS[0]
            try:
                batch = await self.ray.stream_since(handle, ref.uid, cursor, POLL_SECONDS)
            except ActorDied:
                batch = None
            if batch is None:
                handle = None
                continue
            moved = (batch["step"], batch["source"], batch["attempt"]) != (cursor.step, cursor.source, cursor.attempt)
            if batch["deltas"] or moved:
                await response.write(_event("delta", batch))
                cursor = Cursor().after(batch)
            else:
                await response.write(b": idle\n\n")

    async def _actor(self, ref: TaskRunRef, run: TaskRunStatus) -> Any | None:
        try:
            return await asyncio.to_thread(self.ray.find, ref, run.actor.name if run.actor else None, False)
        except RayUnavailable as exc:
            log.info("no live stream for %s/%s now: %s", ref.namespace, ref.name, exc)
            return None


async def serve(port: int, ray: RayGateway) -> web.AppRunner | None:
    """Serve /streams on `port` (0: not at all) until the runner is cleaned up."""
    if not port:
        return None
    from .settings import current

    reads = UserReads()
    server = StreamServer(ray, reads, current().max_streams)
    app = web.Application()
    app.router.add_get("/streams/{namespace}/{name}", server.handle)

    async def close(_: web.Application) -> None:
        await reads.close()

    app.on_cleanup.append(close)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
