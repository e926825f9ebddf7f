"""One list+watch per kind, shared by every browser: the console's own informer.

Each `Informer` runs in a thread (the kubernetes client is synchronous) and hands every change to the `Hub`,
which keeps the current objects and fans each change out, on the event loop, to the queues of the open event
streams (a stream reads its snapshot and subscribes in one step of the loop, so it misses nothing).
A watch that expires (410 Gone) or breaks is followed by a fresh list; objects that vanished meanwhile are
reported deleted, so the pages never hold a stale row.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from kubechain.api.v1alpha1 import GROUP, VERSION

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
Event = tuple[str, str, dict[str, Any]]  # (plural, ADDED | MODIFIED | DELETED, object)
OVERFLOW = ("", "OVERFLOW", {})  # the subscriber fell behind: its stream ends, the browser reconnects


def key_of(obj: dict[str, Any]) -> Key:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


class Informer:
    def __init__(self, api: client.ApiClient, plural: str, namespace: str | None,
                 emit: Callable[[Event], None], watch_seconds: int = 240):
        self.plural, self.namespace, self.emit, self.watch_seconds = plural, namespace, emit, watch_seconds
        self._custom = client.CustomObjectsApi(api)
        self.objects: dict[Key, dict[str, Any]] = {}
        self.synced = threading.Event()
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"ui-watch-{self.plural}", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def _list(self, **kwargs: Any) -> dict[str, Any]:
        if self.namespace:
            return self._custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, **kwargs)
        return self._custom.list_cluster_custom_object(GROUP, VERSION, self.plural, **kwargs)

    def _relist(self) -> str:
        listing = self._list()
        fresh = {key_of(o): o for o in listing.get("items", [])}
        for key in self.objects.keys() - fresh.keys():
            self.emit((self.plural, "DELETED", self.objects.pop(key)))
        for key, obj in fresh.items():
            old = self.objects.get(key)
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self.objects[key] = obj
                self.emit((self.plural, "ADDED" if old is None else "MODIFIED", obj))
        self.synced.set()
        return listing["metadata"]["resourceVersion"]

    def _run(self) -> None:
        version = None
        while not self._stopped.is_set():
            try:
                if version is None:
                    version = self._relist()
                self._watch = watch.Watch()
                for event in self._watch.stream(self._list, resource_version=version, allow_watch_bookmarks=True,
                                                timeout_seconds=self.watch_seconds):
                    kind, obj = event["type"], event["raw_object"]
                    if kind == "ERROR":
                        version = None if obj.get("code") == 410 else version
                        break
                    version = obj["metadata"].get("resourceVersion", version)
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        self.objects.pop(key_of(obj), None)
                    else:
                        self.objects[key_of(obj)] = obj
                    self.emit((self.plural, kind, obj))
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("watching %s: %s", self.plural, exc.reason)
                    self._stopped.wait(1)
                version = None
            except Exception as exc:  # a broken connection: list again (after a pause, not in a tight loop)
                log.warning("watching %s: %s", self.plural, exc)
                self._stopped.wait(1)
                version = None


class Hub:
    """Fans informer events out to subscribers: bounded asyncio queues, one per open event stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue_size: int = 1000):
        self.loop, self.queue_size = loop, queue_size
        self.informers: dict[str, Informer] = {}
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {}
        self._queues: set[asyncio.Queue] = set()

    def add(self, informer: Informer) -> None:
        self.informers[informer.plural] = informer
        self.objects[informer.plural] = {}

    def emit(self, event: Event) -> None:
        """Called from the informers' threads."""
        self.loop.call_soon_threadsafe(self._publish, event)

    def _publish(self, event: Event) -> None:
        plural, kind, obj = event
        if kind == "DELETED":
            self.objects.setdefault(plural, {}).pop(key_of(obj), None)
        else:
            self.objects.setdefault(plural, {})[key_of(obj)] = obj
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a stalled browser must not hold memory: it reconnects and re-reads
                self._queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(OVERFLOW)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for queue in self._queues:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(OVERFLOW)
        self._queues.clear()

    def snapshot(self, plural: str) -> list[dict[str, Any]]:
        return list(self.objects.get(plural, {}).values())

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(plural, {}).get((namespace, name))
