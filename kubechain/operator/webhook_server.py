"""The operator's HTTPS endpoint for the apiserver: kopf's admission webhooks plus the CRDs' conversion
webhook, on one port, with one certificate.

kopf serves admission (`@kopf.on.validate/mutate`) and manages the Validating/MutatingWebhookConfiguration
`kubechain.dev` (URL and caBundle) itself. kopf has no conversion support, so this server also answers
ConversionReviews at `<url>/convert` and puts the same URL and CA into the conversion stanza of the CRDs
that need one. The CA and certificate come from KUBECHAIN_WEBHOOK_CERT_DIR (`ca.crt`, `tls.crt`, `tls.key`,
e.g. a mounted cert-manager Secret); missing files are generated there once (a self-signed CA, 10 years).
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import kopf

from kubechain.api.conversion import ConversionError, convert
from kubechain.api.crdgen import crd
from kubechain.api.v1alpha1 import KINDS

log = logging.getLogger(__name__)
CONVERSION_ID = "convert"


def ensure_certificates(directory: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """(ca.crt, tls.crt, tls.key) in `directory`, generated if absent: a CA and a server certificate for `hosts`."""
    ca_file, cert_file, key_file = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    if ca_file.exists() and cert_file.exists() and key_file.exists():
        return ca_file, cert_file, key_file
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    lifetime = datetime.timedelta(days=3650)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubechain webhook CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + lifetime)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + lifetime)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


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


class WebhookServer(kopf.WebhookServer):
    """kopf's server, with ConversionReviews answered on the same port and the CRDs pointed at it."""

    def __init__(self, *, service: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.service = service

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async def routed(data: Any, *, webhook: str | None = None, **kwargs: Any) -> Any:
            if webhook == CONVERSION_ID:
                return review(data)
            return await fn(data, webhook=webhook, **kwargs)

        async for client_config in super().__call__(routed):
            if self.service:
                client_config = service_config(dict(client_config), self.service)
            await asyncio.to_thread(point_crds_here, dict(client_config))
            yield client_config


def point_crds_here(client_config: dict[str, Any]) -> None:
    from kubernetes import client

    api = client.ApiextensionsV1Api()
    for name in kinds_with_conversion():
        api.patch_custom_resource_definition(name, conversion_patch(client_config))
        log.info("CRD %s converts through %s", name, client_config.get("url") or client_config["service"])
