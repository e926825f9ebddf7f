"""Pointing the apiserver at the webhooks: the Validating- and MutatingWebhookConfiguration `kubechain.dev` and the
conversion stanza of the CRDs that convert, with the CA bundle of the moment.

Every replica does it at start and after each certificate check, and writes only what differs (a read is
cheap, a write wakes every apiserver's webhook informer): replicas of one version agree, so they converge, and a
step of a rotation reaches the apiserver within one check interval. Nothing is ever removed on stop: the other
replicas still answer, and validation fails closed (failurePolicy Fail) if none does.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..webhook_server import conversion_patch, kinds_with_conversion
from .hooks import CONFIGURATION, webhooks

log = logging.getLogger(__name__)


def covers(desired: Any, actual: Any) -> bool:
    """Whether `actual` has every value `desired` sets (the apiserver adds defaults; None: must be absent)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            (k not in actual or actual[k] is None) if v is None else covers(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(map(covers, desired, actual))
    return desired == actual


def publish(client_config: dict[str, Any]) -> None:
    """Make the webhook configurations and the CRDs' conversion point at `client_config` (blocking)."""
    api = client.AdmissionregistrationV1Api()
    for kind, mutating, read, create, replace in (
            ("ValidatingWebhookConfiguration", False, api.read_validating_webhook_configuration,
             api.create_validating_webhook_configuration, api.replace_validating_webhook_configuration),
            ("MutatingWebhookConfiguration", True, api.read_mutating_webhook_configuration,
             api.create_mutating_webhook_configuration, api.replace_mutating_webhook_configuration)):
        ensure_configuration(kind, webhooks(client_config, mutating), read, create, replace)
    extensions = client.ApiextensionsV1Api()
    for name in kinds_with_conversion():
        patch = conversion_patch(client_config)
        current = json.loads(extensions.read_custom_resource_definition(name, _preload_content=False).data)
        if not covers(patch["spec"], current.get("spec")):
            extensions.patch_custom_resource_definition(name, patch)
            log.info("CRD %s converts through %s", name, client_config.get("url") or client_config["service"])


def ensure_configuration(kind: str, hooks: list[dict[str, Any]], read: Callable, create: Callable,
                         replace: Callable) -> None:
    try:
        current = json.loads(read(CONFIGURATION, _preload_content=False).data)
    except ApiException as exc:
        if exc.status != 404:
            raise
        body = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": CONFIGURATION},
                "webhooks": hooks}
        try:
            create(body)
            log.info("created %s %s", kind, CONFIGURATION)
            return
        except ApiException as exc:
            if exc.status != 409:  # another replica created it first: it is checked at the next round
                raise
            return
    if covers(hooks, current.get("webhooks") or []):
        return
    current["webhooks"] = hooks
    replace(CONFIGURATION, current)  # with the resourceVersion read: a 409 is retried at the next check
    log.info("updated %s %s", kind, CONFIGURATION)
