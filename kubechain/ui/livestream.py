"""The run page's live stream: `GET /api/namespaces/{ns}/taskruns/{name}/stream`, the operator's stream of the
run's open step (kubechain/operator/streams.py) passed through to the browser as server-sent events.

The console holds no Ray connection (it talks only to the Kubernetes API and, here, to the operator's stream
endpoint over HTTP); it forwards the caller's own token, which the operator checks by reading the run with it, as
the console's pages do: a caller who may not `get` the run gets the apiserver's 403 and no stream.
"""
from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)


def token_for(user_token: str | None, own: Any) -> str | None:
    """The caller's token; a console acting as its kubeconfig's user (local mode) uses that user's, if it has one."""
    if user_token:
        return user_token
    for auth in (getattr(own, "api_key", None) or {}).values():
        scheme, _, token = str(auth).partition(" ")
        if scheme.lower() == "bearer" and token:
            return token
    return None


async def relay(request: web.Request, stream_url: str | None, token: str | None, namespace: str,
                name: str) -> web.StreamResponse:
    if not stream_url:
        return web.json_response({"error": "this console has no live streams (start it with --stream-url)"},
                                 status=404)
    if token is None:
        return web.json_response({"error": "live streams are read with a bearer token"}, status=401)
    query = {k: request.query[k] for k in ("step", "source", "attempt", "offset") if k in request.query}
    url = f"{stream_url.rstrip('/')}/streams/{namespace}/{name}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                url, params=query, headers={"Authorization": f"Bearer {token}"}) as upstream:
            if upstream.status != 200:
                try:
                    message = (await upstream.json(content_type=None)).get("message")
                except ValueError:
                    message = await upstream.text()
                return web.json_response({"error": message or f"HTTP {upstream.status}"}, status=upstream.status)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
            await response.prepare(request)
            async for piece in upstream.content.iter_any():
                await response.write(piece)
            return response
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("live stream of %s/%s ended: %s", namespace, name, exc)
        return web.json_response({"error": f"the operator's stream is unreachable: {exc}"}, status=502)
    except ConnectionResetError:  # the browser went away
        return web.Response(status=204)
