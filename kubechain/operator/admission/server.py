"""The webhook HTTPS server: admission at `/<hook id>`, conversion at `/convert`, and its probes.

- /readyz: 200 once the certificate is loaded, the webhook configurations written and every informer synced;
  503 from SIGTERM on (the Service, or the harness's proxy, stops sending it requests). The readiness probe
  means "can answer webhooks".
- /healthz: 200 while the event loop turns (liveness), with the reviews answered so far by hook.
- While draining, every answer closes its connection (`Connection: close`), so the apiserver opens its next one
  to a replica that stays, instead of reusing one that is about to close.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..webhook_server import CONVERSION_ID, review
from .hooks import HOOKS, answer

log = logging.getLogger(__name__)
CONTEXT: web.AppKey["Context"] = web.AppKey("context")


@dataclass
class Context:
    memo: Any
    """What the handlers get as `memo` (`memo.state`: kube, access reviews, settings)."""
    indexes: dict[str, Any]
    """The informers' views by index name, passed to the handlers as kwargs."""
    waiting_for: set[str] = field(default_factory=lambda: {"certificate", "configuration"})
    """What readiness still waits for (informers add their names)."""
    draining: bool = False
    answered: Counter[str] = field(default_factory=Counter)
    """Reviews answered, by hook id (and `convert`): /healthz shows them."""


async def admission(request: web.Request) -> web.Response:
    context: Context = request.app[CONTEXT]
    hook = HOOKS.get(request.match_info["hook"])
    if hook is None:
        return web.json_response({"message": f"no webhook {request.match_info['hook']!r}"}, status=404)
    body = await request.json(loads=json.loads)
    context.answered[hook.id] += 1
    return finish(context, web.json_response(await answer(hook, body, context.memo, context.indexes)))


async def conversion(request: web.Request) -> web.Response:
    request.app[CONTEXT].answered[CONVERSION_ID] += 1
    return finish(request.app[CONTEXT], web.json_response(review(await request.json())))


def finish(context: Context, response: web.Response) -> web.Response:
    if context.draining:
        response.force_close()
    return response


async def readyz(request: web.Request) -> web.Response:
    context: Context = request.app[CONTEXT]
    waiting = sorted(context.waiting_for) + (["not draining"] if context.draining else [])
    return web.json_response({"waitingFor": waiting}, status=503 if waiting else 200)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"answered": request.app[CONTEXT].answered})


def create_app(context: Context) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)  # an object may be up to ~1.5 MB, a review holds two
    app[CONTEXT] = context
    app.router.add_post(f"/{CONVERSION_ID}", conversion)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{hook}", admission)
    return app
