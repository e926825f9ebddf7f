"""The admission webhooks: a registry (`validate`, `mutate`), the answer to one AdmissionReview, and the webhook
configurations that point the apiserver at them.

Handlers keep kopf's calling convention (kwargs: namespace, name, spec, new, old, operation, userinfo, patch,
memo, and the indexes by name; raise kopf.AdmissionError to refuse), and the answers and configurations are what
kopf produced (names `<id>.kubechain.dev`, JSON patches, failure policies), so the handlers in
controllers/webhooks.py read as before. What changed is who serves them: this process, not kopf's reconcile loop.
"""
from __future__ import annotations

import base64
import copy
import inspect
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION

log = logging.getLogger(__name__)
CONFIGURATION = GROUP  # the name of both webhook configurations, as kopf's `settings.admission.managed` had it


@dataclass(frozen=True)
class Hook:
    id: str
    plural: str
    operations: tuple[str, ...]
    mutating: bool
    ignore_failures: bool
    fn: Callable[..., Any]


HOOKS: dict[str, Hook] = {}


def validate(plural: str, *, id: str, operations: list[str]) -> Callable[[Callable], Callable]:
    """A validating webhook: failurePolicy Fail (nothing gets in unchecked while no replica answers)."""
    def register(fn: Callable) -> Callable:
        HOOKS[id] = Hook(id, plural, tuple(operations), mutating=False, ignore_failures=False, fn=fn)
        return fn
    return register


def mutate(plural: str, *, id: str, operations: list[str], ignore_failures: bool = True) -> Callable[[Callable], Callable]:
    """A mutating (defaulting) webhook."""
    def register(fn: Callable) -> Callable:
        HOOKS[id] = Hook(id, plural, tuple(operations), mutating=True, ignore_failures=ignore_failures, fn=fn)
        return fn
    return register


async def answer(hook: Hook, review: dict[str, Any], memo: Any, indexes: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview response: allowed, or refused with the handler's message and code; a JSON patch for
    what a mutating handler changed."""
    request = review.get("request") or {}
    new, old = request.get("object"), request.get("oldObject")
    raw = new if new is not None else old or {}
    body = kopf.Body(raw)
    patch = kopf.Patch(body=body)
    metadata = raw.get("metadata") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    try:
        result = hook.fn(namespace=request.get("namespace") or metadata.get("namespace"),
                         name=request.get("name") or metadata.get("name"), spec=kopf.Spec(body), body=body,
                         new=kopf.Body(new) if new is not None else None, old=kopf.Body(old) if old is not None else None,
                         operation=request.get("operation"), userinfo=request.get("userInfo") or {}, patch=patch,
                         dryrun=bool(request.get("dryRun")), memo=memo, **indexes)
        if inspect.isawaitable(result):
            await result
    except kopf.AdmissionError as exc:
        response.update(allowed=False, status={"message": str(exc) or repr(exc), "code": exc.code or 500})
    except Exception as exc:  # a handler's bug refuses (validation fails closed), and says so
        log.exception("webhook %s failed", hook.id)
        response.update(allowed=False, status={"message": str(exc) or repr(exc), "code": 500})
    if response["allowed"] and (ops := patch.as_json_patch()):
        response.update(patch=base64.b64encode(json.dumps(ops).encode()).decode(), patchType="JSONPatch")
    return {"apiVersion": review.get("apiVersion", "admission.k8s.io/v1"), "kind": "AdmissionReview",
            "response": response}


def webhooks(client_config: dict[str, Any], mutating: bool) -> list[dict[str, Any]]:
    """The `webhooks` of the Validating- or MutatingWebhookConfiguration, each at `<client url or path>/<id>`."""
    return [{
        "name": f"{hook.id}.{CONFIGURATION}",
        "sideEffects": "None",
        "failurePolicy": "Ignore" if hook.ignore_failures else "Fail",
        "matchPolicy": "Equivalent",  # v1alpha2 writes are converted and sent to the v1alpha1 hook
        "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [hook.plural],
                   "operations": list(hook.operations), "scope": "*"}],
        "clientConfig": at_path(client_config, hook.id),
        "timeoutSeconds": 30,
        "admissionReviewVersions": ["v1", "v1beta1"],
    } for hook in sorted(HOOKS.values(), key=lambda h: h.id) if hook.mutating is mutating]


def at_path(client_config: dict[str, Any], path: str) -> dict[str, Any]:
    """`client_config` (a URL, or a Service with a path) pointed at `/<path>` below it."""
    config = copy.deepcopy(client_config)
    if config.get("url"):
        config["url"] = f"{config['url'].rstrip('/')}/{path}"
    if config.get("service") is not None:
        config["service"]["path"] = f"{config['service'].get('path', '')}/{path}"
    return config
