"""The webhook process's own views of the objects its validators read (an agent's ToolSets and Tools, a
namespace's highest priority): list, then watch, each kind in a thread, as client-go's informers do.

The views have kopf's index shape (`get(key)` -> the values under it; iterating yields the keys) and are filled
by the same index functions the reconciler gives kopf (controllers/catalog.py, controllers/taskrun/indexes.py),
so a validator reads the same thing in either process. Every change is applied on the server's event loop
(call_soon_threadsafe): the validators never see a view mid-update, and need no lock.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Callable

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
IndexFn = Callable[..., dict[Any, Any] | None]
Key = tuple[str, str]  # (namespace, name) of a watched object
WATCH_SECONDS = 240  # the apiserver ends a watch after this; it is resumed from the last resourceVersion


def index_kwargs(obj: dict[str, Any]) -> dict[str, Any]:
    """What kopf passes an index function about an object."""
    meta = obj.get("metadata") or {}
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid"), "meta": meta,
            "spec": obj.get("spec") or {}, "status": obj.get("status") or {}, "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {}, "body": obj}


class View(dict):
    """key -> [values]: kopf.Index's shape."""


class Informer:
    """One kind, listed and watched in a daemon thread; `view` is only changed on `loop`."""

    def __init__(self, name: str, lister: Callable[..., Any], fn: IndexFn, loop: asyncio.AbstractEventLoop,
                 when: Callable[[dict[str, Any]], bool] = lambda obj: True):
        self.name, self._lister, self._fn, self._when, self._loop = name, lister, fn, when, loop
        self.view = View()
        self._entries: dict[Key, dict[Any, Any]] = {}  # what each object contributed to the view
        self.synced = asyncio.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True).start()

    def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                self._list_and_watch()
                delay = 0.5
            except Exception as exc:  # an apiserver away or restarting: list afresh, backing off to 10 s
                log.warning("watching %s: %s; listing again in %.1f s", self.name, exc, delay)
                time.sleep(delay)
                delay = min(10.0, delay * 2)

    def _list_and_watch(self) -> None:
        page = json.loads(self._lister(_preload_content=False, _request_timeout=60).data)
        version = page["metadata"]["resourceVersion"]
        self._loop.call_soon_threadsafe(self._replace_all, page.get("items") or [])
        stream = watch.Watch(return_type="object")  # plain dicts: no model objects built per event
        for event in stream.stream(self._lister, resource_version=version, timeout_seconds=WATCH_SECONDS,
                                   allow_watch_bookmarks=True):
            obj = event["raw_object"]
            if event["type"] == "ERROR":
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))  # 410: list again
            if event["type"] == "BOOKMARK":
                continue
            self._loop.call_soon_threadsafe(self._apply, event["type"], obj)

    def _key(self, obj: dict[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return meta.get("namespace") or "", meta.get("name") or ""

    def _entry(self, obj: dict[str, Any]) -> dict[Any, Any]:
        return (self._fn(**index_kwargs(obj)) or {}) if self._when(obj) else {}

    def _replace_all(self, items: list[dict[str, Any]]) -> None:
        self._entries = {self._key(o): self._entry(o) for o in items}
        self.view.clear()
        for entry in self._entries.values():
            for key, value in entry.items():
                self.view.setdefault(key, []).append(value)
        self.synced.set()

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = self._key(obj)
        for k, value in self._entries.pop(key, {}).items():
            values = self.view.get(k, [])
            if value in values:
                values.remove(value)
            if not values:
                self.view.pop(k, None)
        if kind != "DELETED":
            self._entries[key] = entry = self._entry(obj)
            for k, value in entry.items():
                self.view.setdefault(k, []).append(value)


class Unwatched(dict):
    """An index no validator reads in this process: reading it is a bug (add the kind to the informers)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def get(self, *_: Any, **__: Any) -> Any:
        raise LookupError(f"the webhook process does not watch {self.name}: add it to admission/main.py")

    def __iter__(self):
        raise LookupError(f"the webhook process does not watch {self.name}: add it to admission/main.py")
