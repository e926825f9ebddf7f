"""What the apiserver is told about the webhooks, and the conversion webhook's answer.

Every replica's webhook process (kubechain/operator/admission/) serves admission at `<url>/<hook id>` and
ConversionReviews at `<url>/convert`, on one port with one certificate, and puts the URL (or Service) and CA into
the webhook configurations `kubechain.dev` and the conversion stanza of the CRDs that need one.
"""
from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

from kubechain.api.conversion import ConversionError, convert
from kubechain.api.crdgen import crd
from kubechain.api.v1alpha1 import KINDS

from .settings import WebhookSettings

log = logging.getLogger(__name__)
CONVERSION_ID = "convert"


def ensure_certificates(directory: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """(ca.crt, tls.crt, tls.key) in `directory`, generated if absent: a CA and a server certificate for `hosts`."""
    from .admission.certs import FileCertificates

    FileCertificates(directory, hosts, datetime.timedelta(days=3650)).current()
    return directory / "ca.crt", directory / "tls.crt", directory / "tls.key"


def hosts(webhook: WebhookSettings) -> list[str]:
    """The names in the certificate: the Service's (<name>.<namespace>.svc, as the apiserver calls it), the host."""
    names = [webhook.host, "127.0.0.1", "localhost"]
    if webhook.service:
        namespace, _, name = webhook.service.partition(":")[0].partition("/")
        names = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", *names]
    return names


def base_client_config(webhook: WebhookSettings, ca_bundle: str) -> dict[str, Any]:
    """Where the apiserver calls the webhooks (each at a path below it), and the CAs it trusts (base64)."""
    if webhook.service:
        config = service_config({"caBundle": ca_bundle}, webhook.service)
    else:
        config = {"url": webhook.url or f"https://{webhook.host}:{webhook.port}", "caBundle": ca_bundle}
    return config


def review(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ConversionReview (apiextensions.k8s.io/v1)."""
    body = request.get("request") or {}
    try:
        converted = [convert(o, body["desiredAPIVersion"]) for o in body.get("objects", [])]
        response = {"uid": body.get("uid", ""), "convertedObjects": converted, "result": {"status": "Success"}}
    except (ConversionError, KeyError) as exc:
        response = {"uid": body.get("uid", ""), "result": {"status": "Failure", "message": str(exc)}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "response": response}


def conversion_patch(client_config: dict[str, Any]) -> dict[str, Any]:
    """The conversion stanza pointing the apiserver at this server (URL or Service, and CA, from kopf's client config)."""
    if "service" in client_config:
        service = {**client_config["service"], "path": f"{client_config['service'].get('path', '')}/{CONVERSION_ID}"}
        config = {"service": service, "url": None, "caBundle": client_config.get("caBundle")}
    else:
        config = {"url": f"{client_config['url'].rstrip('/')}/{CONVERSION_ID}", "service": None,
                  "caBundle": client_config.get("caBundle")}
    return {"spec": {"conversion": {"strategy": "Webhook", "webhook": {
        "conversionReviewVersions": ["v1"], "clientConfig": config}}}}


def kinds_with_conversion() -> list[str]:
    definitions = [crd(k) for k in KINDS]
    return [d["metadata"]["name"] for d in definitions if d["spec"]["conversion"]["strategy"] == "Webhook"]


def service_config(client_config: dict[str, Any], service: str) -> dict[str, Any]:
    """kopf's URL client config turned into one through a Service `namespace/name:port`."""
    where, _, port = service.partition(":")
    namespace, _, name = where.partition("/")
    config: dict[str, Any] = {"service": {"namespace": namespace, "name": name, "port": int(port or 443), "path": ""}}
    if "caBundle" in client_config:
        config["caBundle"] = client_config["caBundle"]
    return config
