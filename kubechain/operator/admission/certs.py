"""The webhook certificate: generated, kept in a Secret every replica reads (or in mounted files), rotated by the
steps of kubechain/core/certrotation.py, and loaded into the running server's TLS context without a restart.

The Secret (`KUBECHAIN_WEBHOOK_CERT_SECRET`): tls.crt, tls.key (served), ca.crt (their CA), ca-bundle.crt (every
CA the apiserver is told to trust), next-* (a staged CA and certificate), and the annotation
kubechain.dev/cert-changed-at. The first replica to start creates it; a replica that loses that race (409) reads
the winner's, so all serve one certificate. No CA key is stored: each rotation brings a new CA.
"""
from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import logging
import ssl
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubechain.api.v1alpha1 import GROUP
from kubechain.core.certrotation import Bundle, Step, plan

log = logging.getLogger(__name__)
CHANGED_AT = f"{GROUP}/cert-changed-at"
Pem = bytes


def generate(hosts: list[str], lifetime: datetime.timedelta) -> tuple[Pem, Pem, Pem]:
    """(CA, certificate for `hosts` signed by it, the certificate's key), PEM. The CA's key is dropped here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    # valid from a little earlier, for clocks a little behind this one's
    now = datetime.datetime.now(datetime.timezone.utc) - min(datetime.timedelta(minutes=1), lifetime / 20)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    # A name of its own per CA: a client holding two CAs of one name (during a rotation) tries only one of them
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kubechain webhook CA {uuid.uuid4().hex[:12]}")])
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
    return (ca.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@dataclass(frozen=True)
class Material:
    ca: Pem
    cert: Pem
    key: Pem
    bundle: Pem
    """The CAs the apiserver trusts."""
    changed_at: datetime.datetime
    staged: tuple[Pem, Pem, Pem] | None = None
    """(CA, certificate, key) waiting to be served."""
    version: str = ""
    """The Secret's resourceVersion this was read from."""

    def as_bundle(self) -> Bundle:
        from cryptography import x509

        served = x509.load_pem_x509_certificate(self.cert)
        return Bundle(served.not_valid_before_utc, served.not_valid_after_utc, self.staged is not None,
                      self.bundle.count(b"BEGIN CERTIFICATE"), self.changed_at)


def fresh(hosts: list[str], lifetime: datetime.timedelta) -> Material:
    ca, cert, key = generate(hosts, lifetime)
    return Material(ca, cert, key, ca, datetime.datetime.now(datetime.timezone.utc))


def stepped(material: Material, step: Step, hosts: list[str], lifetime: datetime.timedelta) -> Material:
    """The material after one rotation step (kubechain/core/certrotation.py)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    match step:
        case Step.STAGE:
            staged = generate(hosts, lifetime)
            return replace(material, staged=staged, bundle=material.ca + staged[0], changed_at=now)
        case Step.PROMOTE:
            assert material.staged is not None
            ca, cert, key = material.staged
            return replace(material, ca=ca, cert=cert, key=key, staged=None, changed_at=now)
        case Step.TRIM:
            return replace(material, bundle=material.ca, changed_at=now)
        case Step.KEEP:
            return material


class SecretCertificates:
    """The shared Secret: `current()` reads it (creating it if absent), `rotate()` takes a due step."""

    def __init__(self, namespace: str, name: str, hosts: list[str], lifetime: datetime.timedelta,
                 overlap: datetime.timedelta):
        self.namespace, self.name, self.hosts, self.lifetime, self.overlap = namespace, name, hosts, lifetime, overlap
        self._core = client.CoreV1Api()

    def current(self) -> Material:
        try:
            found = self._core.read_namespaced_secret(self.name, self.namespace, _preload_content=False)
            return from_secret(json.loads(found.data))
        except ApiException as exc:
            if exc.status != 404:
                raise
        material = fresh(self.hosts, self.lifetime)
        try:
            created = self._core.create_namespaced_secret(self.namespace, self._body(material))
            log.info("created the webhook certificate Secret %s/%s", self.namespace, self.name)
            return replace(material, version=created.metadata.resource_version)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return self.current()  # another replica created it first: serve theirs

    def rotate(self, material: Material, now: datetime.datetime) -> Material:
        """The step due now, written if it is ours to write; what the Secret holds afterwards."""
        step = plan(material.as_bundle(), now, self.overlap)
        if step is Step.KEEP:
            return material
        after = stepped(material, step, self.hosts, self.lifetime)
        body = self._body(after)
        body["metadata"]["resourceVersion"] = material.version
        try:
            written = self._core.replace_namespaced_secret(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another replica took this step first
                return self.current()
            raise
        log.info("webhook certificate rotation: %s", step.value)
        return replace(after, version=written.metadata.resource_version)

    def _body(self, material: Material) -> dict[str, Any]:
        data = {"ca.crt": material.ca, "tls.crt": material.cert, "tls.key": material.key, "ca-bundle.crt": material.bundle}
        if material.staged:
            data.update({"next-ca.crt": material.staged[0], "next-tls.crt": material.staged[1],
                         "next-tls.key": material.staged[2]})
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "annotations": {CHANGED_AT: material.changed_at.isoformat()},
                             "labels": {"app.kubernetes.io/part-of": "kubechain"}},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def from_secret(secret: dict[str, Any]) -> Material:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    changed = (secret["metadata"].get("annotations") or {}).get(CHANGED_AT)
    staged = (data["next-ca.crt"], data["next-tls.crt"], data["next-tls.key"]) if "next-tls.crt" in data else None
    return Material(data["ca.crt"], data["tls.crt"], data["tls.key"], data.get("ca-bundle.crt") or data["ca.crt"],
                    datetime.datetime.fromisoformat(changed) if changed else datetime.datetime.now(datetime.timezone.utc),
                    staged, secret["metadata"]["resourceVersion"])


class FileCertificates:
    """ca.crt, tls.crt, tls.key in a directory: mounted (cert-manager renews them; read again each check) or
    generated there once (a single local process)."""

    def __init__(self, directory: Path, hosts: list[str], lifetime: datetime.timedelta):
        self.directory, self.hosts, self.lifetime = directory, hosts, lifetime

    def current(self) -> Material:
        files = [self.directory / n for n in ("ca.crt", "tls.crt", "tls.key")]
        if not all(f.exists() for f in files):
            self.directory.mkdir(parents=True, exist_ok=True)
            for path, pem in zip(files, generate(self.hosts, self.lifetime)):
                path.write_bytes(pem)
            files[2].chmod(0o600)
        ca, cert, key = (f.read_bytes() for f in files)
        changed = datetime.datetime.fromtimestamp(files[1].stat().st_mtime, datetime.timezone.utc)
        return Material(ca, cert, key, ca, changed, version=f"{files[1].stat().st_mtime_ns}")

    def rotate(self, material: Material, now: datetime.datetime) -> Material:
        return self.current()  # whoever mounted them rotates them


class ServingTLS:
    """The server's SSLContext: loading a new certificate into it takes effect at the next handshake."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.loaded: Pem = b""

    def load(self, material: Material) -> None:
        if material.cert == self.loaded:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.directory / "serving.crt", self.directory / "serving.key"
        key.touch(mode=0o600)
        cert.write_bytes(material.cert)
        key.write_bytes(material.key)
        self.context.load_cert_chain(cert, key)
        self.loaded = material.cert
        log.info("serving the webhook certificate valid until %s", material.as_bundle().not_after)
