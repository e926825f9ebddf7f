"""The models the scripted LLM server serves, and its models endpoints (kubechain/demo/llm_server.py).

Every model name is served unless declared unknown, as by a proxy: tests and the demo use any name, scripted or
not. A model declared unknown (``PUT /_models {"unknown": [...]}``, ``ScriptedLLMServer.set_unknown_models``) gets
404 ``model_not_found`` from ``GET /v1/models/{model}`` and chat completions, and is not listed, as OpenAI does. A
server started with ``lists_models=False`` (``--no-models-endpoint``) has no models endpoints at all, like the
OpenAI-compatible servers that do not list their models.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from aiohttp import web


class ServedModels:
    """Which models the server serves; shared by the loop and test threads."""

    def __init__(self, listed: bool = True):
        self.listed = listed  # whether the models endpoints exist
        self._lock = threading.Lock()
        self._unknown: set[str] = set()

    def serves(self, model: str) -> bool:
        with self._lock:
            return model not in self._unknown

    def set_unknown(self, models: Iterable[str]) -> None:
        with self._lock:
            self._unknown = set(models)

    def unknown(self) -> list[str]:
        with self._lock:
            return sorted(self._unknown)


def model_not_found(model: str) -> web.Response:
    """OpenAI's answer for a model it does not serve (or the key may not use)."""
    return web.json_response({"error": {"message": f"The model `{model}` does not exist or you do not have access "
                                                   "to it.", "type": "invalid_request_error", "param": None,
                                        "code": "model_not_found"}}, status=404)


def _entry(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "kubechain-testing"}


def add_routes(app: web.Application, served: ServedModels, listed: Callable[[], list[str]],
               refused: Callable[[web.Request], web.Response | None]) -> None:
    """`listed`: the model names the listing shows (scripted ones); `refused`: the answer to a request without the
    server's key, or None."""

    async def list_models(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:  # not `or`: a Response is an (empty) mapping, so falsy
            return refusal
        return web.json_response({"object": "list", "data": [_entry(m) for m in listed() if served.serves(m)]})

    async def retrieve_model(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if (refusal := refused(request)) is not None:
            return refusal
        return web.json_response(_entry(model)) if served.serves(model) else model_not_found(model)

    async def control(request: web.Request) -> web.Response:
        if request.method == "PUT":
            unknown = (await request.json()).get("unknown")
            if not isinstance(unknown, list) or not all(isinstance(m, str) for m in unknown):
                return web.json_response({"error": "expected {\"unknown\": [model names]}"}, status=400)
            served.set_unknown(unknown)
        return web.json_response({"unknown": served.unknown()})

    if served.listed:
        app.router.add_get("/v1/models", list_models)
        app.router.add_get("/v1/models/{model:.+}", retrieve_model)  # names may hold a slash (org/model)
    app.router.add_route("*", "/_models", control)
