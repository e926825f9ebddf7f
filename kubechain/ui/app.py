"""The console's HTTP server (aiohttp): the page, a JSON API and server-sent events.

    GET  /                                             the page (static/: plain HTML, JS, CSS)
    GET  /healthz                                      200 once every watch has listed its kind
    GET  /api/config                                   who you are, read-only or not, which links exist
    POST /api/login, /api/logout                       set / clear the token cookie (HttpOnly, SameSite=Strict)
                                                       (failed sign-ins are limited per address: 429)
    GET  /api/{agents|tasks|taskruns}?namespace=       rows you may list
    GET  /api/watch?kinds=...&namespace=               server-sent events: `snapshot` per kind, then `change`
    GET  /api/namespaces/{ns}/taskruns/{name}          a run's page: transcript (sealed chunks too), journal, ...
    GET  /api/namespaces/{ns}/taskruns/{name}/stream   server-sent events: the open step's answer as it forms
                                                       (the operator's stream, with the caller's token: livestream.py)
    POST /api/namespaces/{ns}/taskruns/{name}/{answer|approve|reject|cancel}

Every POST needs the header `X-Kubechain-UI: 1` and, when the browser sends one, a same-origin `Origin`
(cross-site requests cannot set a custom header without a CORS preflight, which this server never allows).
Every response carries a Content-Security-Policy without inline script, and `nosniff`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubechain.clients import transcript
from kubechain.api.v1alpha1 import GROUP, VERSION, HumanResponse, TaskRunStatus, WaitingFor
from kubechain.clients.respond import Refused, Reply, send_cancel, send_reply
from kubechain.ui import views
from kubechain.ui.auth import COOKIE, Authorizer, User, load_configuration, token_of
from kubechain.ui.livestream import relay, token_for
from kubechain.ui.ratelimit import SignInLimited, SignInLimiter
from kubechain.ui.watch import OVERFLOW, Hub, Informer

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
CSRF_HEADER = "X-Kubechain-UI"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
ACTIONS = ("answer", "approve", "reject", "cancel")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8090
    kubeconfig: str | None = None        # the console's own credentials (default: in-cluster, then $KUBECONFIG)
    allow_actions: bool = False          # read-only unless set: answer/approve/reject/cancel need it
    as_kubeconfig_user: bool = False     # local use: requests without a token are the kubeconfig's user
    namespace: str | None = None         # watch one namespace (default: all)
    ray_dashboard_url: str | None = None
    tracing_url: str | None = None       # with {trace_id}, or a prefix the trace id is appended to
    sign_in_burst: int = 10              # failed sign-ins (unknown tokens) per client address at once...
    sign_in_per_minute: float = 10.0     # ...and how fast they come back (kubechain/ui/ratelimit.py)
    stream_url: str | None = None        # the operator's live streams (KUBECHAIN_STREAM_URL), for run pages


AUTHZ = web.AppKey("authz", Authorizer)
HUB = web.AppKey("hub", Hub)
SETTINGS = web.AppKey("settings", Settings)
USER = web.RequestKey("user", User)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def limited(exc: SignInLimited) -> web.Response:
    response = error(429, str(exc))
    if exc.retry_after < 86400:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def api_error(exc: ApiException) -> web.Response:
    """The apiserver's own message (a 403 names the user and the verb it refused)."""
    try:
        message = json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = exc.reason or "the Kubernetes API failed"
    return error(exc.status if exc.status and 400 <= exc.status < 500 else 502, message)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """CSRF checks on writes, then the caller's identity for every /api/ route but login."""
    if request.method not in ("GET", "HEAD"):
        if request.headers.get(CSRF_HEADER) != "1":
            return error(403, f"missing header {CSRF_HEADER}")
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            return error(403, "cross-origin request refused")
    if request.path.startswith("/api/") and request.path != "/api/login":
        try:
            user = await request.app[AUTHZ].authenticate(token_of(request.headers, request.cookies), request.remote)
        except SignInLimited as exc:
            return limited(exc)
        except Exception as exc:  # the apiserver is unreachable or refuses the console's own account
            log.warning("TokenReview failed: %s", exc)
            return error(503, "cannot check the token with the Kubernetes API")
        if user is None:
            return error(401, "sign in with a Kubernetes bearer token")
        request[USER] = user
    return await handler(request)


# --- pages and session ---------------------------------------------------------------------------------

async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def healthz(request: web.Request) -> web.Response:
    synced = all(i.synced.is_set() for i in request.app[HUB].informers.values())
    return web.Response(status=200 if synced else 503, text="ok" if synced else "listing")


async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.json_response({"user": request[USER].name, "readOnly": not settings.allow_actions,
                              "namespace": settings.namespace,
                              "rayDashboard": bool(settings.ray_dashboard_url), "tracing": bool(settings.tracing_url)})


async def login(request: web.Request) -> web.Response:
    body = await json_body(request)
    token = str(body.get("token", "")).strip()
    try:
        user = await request.app[AUTHZ].authenticate(token, request.remote) if token else None
    except SignInLimited as exc:
        return limited(exc)
    if user is None:
        return error(401, "the Kubernetes API does not accept this token")
    response = web.json_response({"user": user.name})
    secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/", max_age=8 * 3600)
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.json_response({})
    response.del_cookie(COOKIE, path="/")
    return response


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- reads: rows from the shared watches, filtered by what the caller may list -------------------------

async def visible(request: web.Request, plural: str, obj: dict[str, Any], namespace: str | None) -> bool:
    ns = obj["metadata"].get("namespace", "")
    return (namespace is None or ns == namespace) and \
        await request.app[AUTHZ].allowed(request[USER], "list", plural, ns)


def wanted(request: web.Request) -> tuple[list[str], str | None]:
    kinds = [k for k in request.query.get("kinds", ",".join(views.ROWS)).split(",") if k in views.ROWS]
    namespace = request.query.get("namespace") or None
    if namespace is not None and not NAME.match(namespace):
        raise web.HTTPBadRequest(text="bad namespace")
    return kinds, namespace


async def rows(request: web.Request) -> web.Response:
    plural = request.match_info["plural"]
    _, namespace = wanted(request)
    return web.json_response([views.ROWS[plural](o) for o in request.app[HUB].snapshot(plural)
                              if await visible(request, plural, o, namespace)])


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the rows of each kind you may list, then every change to them, as it happens."""
    kinds, namespace = wanted(request)
    hub = request.app[HUB]
    queue = hub.subscribe()  # before the snapshot, in the same step of the loop: no change falls in between
    snapshots = {k: hub.snapshot(k) for k in kinds}
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        for kind, objs in snapshots.items():
            items = [views.ROWS[kind](o) for o in objs if await visible(request, kind, o, namespace)]
            await response.write(sse("snapshot", {"kind": kind, "items": items}))
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:  # quiet: is the token still good (revoked, expired)?
                if await request.app[AUTHZ].authenticate(request[USER].token) is None:
                    break
                await response.write(b": keepalive\n\n")
                continue
            if event is OVERFLOW:
                break
            kind, change, obj = event
            if kind in kinds and await visible(request, kind, obj, namespace):
                await response.write(sse("change", {"kind": kind, "type": change, "item": views.ROWS[kind](obj)}))
    except ConnectionResetError:  # the browser went away
        pass
    finally:
        hub.unsubscribe(queue)
    return response


def run_name(request: web.Request) -> tuple[str, str]:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    if not (NAME.match(namespace) and NAME.match(name)):
        raise web.HTTPBadRequest(text="bad name")
    return namespace, name


async def taskrun(request: web.Request) -> web.Response:
    """A run's page, read with the caller's own token: the apiserver decides what they may see."""
    namespace, name = run_name(request)
    user: User = request[USER]

    def load() -> tuple[dict, list, list, str | None]:
        with request.app[AUTHZ].api_client(user) as api, client.ApiClient(request.app[AUTHZ].own) as own:
            obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "taskruns",
                                                                            name)
            try:
                # The user's token read the run; the store's DSN is read with the console's own account (see
                # kubechain/clients/transcript.py: who may read what).
                status, messages, calls = transcript.complete(obj, api, own)
                return obj, messages, calls, transcript.dropped(status)
            except ApiException as exc:  # e.g. the caller may not read the ConfigMaps the sealed chunks are in
                status = TaskRunStatus.model_validate(obj.get("status") or {})
                return obj, status.context_window, status.tool_call_history, f"sealed messages not shown: {exc.reason}"
            except Exception as exc:  # the external context store is away (or a chunk there is corrupt)
                status = TaskRunStatus.model_validate(obj.get("status") or {})
                return (obj, status.context_window, status.tool_call_history,
                        f"sealed messages not shown: {type(exc).__name__}: {str(exc)[:300]}")

    try:
        obj, messages, calls, sealed_error = await asyncio.to_thread(load)
    except ApiException as exc:
        return api_error(exc)
    settings, hub = request.app[SETTINGS], request.app[HUB]
    runs = [o for o in hub.snapshot("taskruns") if o["metadata"].get("namespace") == namespace] \
        if await request.app[AUTHZ].allowed(user, "list", "taskruns", namespace) else []
    detail = views.taskrun_detail(obj, messages, calls, runs, settings.ray_dashboard_url, settings.tracing_url)
    return web.json_response({**detail, "sealedError": sealed_error})


async def live(request: web.Request) -> web.StreamResponse:
    namespace, name = run_name(request)
    token = token_for(request[USER].token, request.app[AUTHZ].own)
    return await relay(request, request.app[SETTINGS].stream_url, token, namespace, name)


# --- writes: the CLI's own functions, with the caller's token ------------------------------------------

async def act(request: web.Request) -> web.Response:
    namespace, name = run_name(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound()
    if not request.app[SETTINGS].allow_actions:
        return error(403, "this console is read-only (start it with --allow-actions)")
    user: User = request[USER]
    body = await json_body(request)
    call_id = str(body["callId"]) if body.get("callId") else None
    reason = str(body.get("reason", ""))
    if action == "answer":
        if not str(body.get("text", "")).strip():
            return error(400, "the answer is empty")
        reply = Reply(WaitingFor.ANSWER, HumanResponse(answer=str(body["text"]), by=user.name))
    elif action in ("approve", "reject"):
        if action == "reject" and not reason.strip():
            return error(400, "a rejection needs a reason (the LLM reads it)")
        reply = Reply(WaitingFor.APPROVAL, HumanResponse(approved=action == "approve", reason=reason, by=user.name))

    def write() -> str | None:
        with request.app[AUTHZ].api_client(user) as api:
            custom = client.CustomObjectsApi(api)
            if action == "cancel":
                send_cancel(custom, namespace, name)
                return None
            return send_reply(custom, namespace, name, reply, call_id)

    try:
        answered = await asyncio.to_thread(write)
    except Refused as exc:
        return error(409, f"refused: {exc}")
    except ApiException as exc:
        return api_error(exc)
    log.info("%s: %s taskrun %s/%s call %s", user.name, action, namespace, name, answered)
    return web.json_response({"action": action, "callId": answered})


# --- the application -----------------------------------------------------------------------------------

def make_app(settings: Settings, authz: Authorizer | None = None, hub: Hub | None = None) -> web.Application:
    """The console. Without `authz` it builds one from the settings' credentials; without `hub` it starts one
    watch per kind (tests pass fakes for both)."""
    app = web.Application(middlewares=[guard])
    app[SETTINGS] = settings
    app[AUTHZ] = authz or Authorizer(load_configuration(settings.kubeconfig),
                                     as_kubeconfig_user=settings.as_kubeconfig_user,
                                     limiter=SignInLimiter(settings.sign_in_burst, settings.sign_in_per_minute))
    app.on_response_prepare.append(add_security_headers)

    async def start_watches(app: web.Application) -> None:
        if hub is not None:
            app[HUB] = hub
            return
        app[HUB] = started = Hub(asyncio.get_running_loop())
        for plural in views.ROWS:
            informer = Informer(client.ApiClient(app[AUTHZ].own), plural, settings.namespace, started.emit)
            started.add(informer)
            informer.start()

    async def end_streams(app: web.Application) -> None:
        for informer in app[HUB].informers.values():
            informer.stop()
        app[HUB].close()

    app.on_startup.append(start_watches)
    app.on_shutdown.append(end_streams)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/config", config)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/watch", events)
    app.router.add_get("/api/{plural:agents|tasks|taskruns}", rows)
    app.router.add_get("/api/namespaces/{namespace}/taskruns/{name}", taskrun)
    app.router.add_get("/api/namespaces/{namespace}/taskruns/{name}/stream", live)
    app.router.add_post("/api/namespaces/{namespace}/taskruns/{name}/{action}", act)
    return app


def serve(settings: Settings) -> None:
    if settings.as_kubeconfig_user and settings.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--as-kubeconfig-user lends your kubeconfig to every caller: listen on 127.0.0.1 only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mode = "read-write (--allow-actions)" if settings.allow_actions else "read-only"
    log.info("kubechain-ui on http://%s:%d, %s", settings.host, settings.port, mode)
    web.run_app(make_app(settings), host=settings.host, port=settings.port, print=None, shutdown_timeout=5)
