"""Where the actor's apiserver is and how it authenticates. A run's actor uses what the operator hands it with the
run (`from_credentials`: its namespace's actor ServiceAccount token, renewed while the run lives); the process's
own identity (`from_environment`: the pod's service account, or KUBECONFIG) serves only tests and benches, and
in a cluster the Ray pods' account has no rights.

Not the kubernetes package: importing `kubernetes.client` costs every actor process ~21 MB of memory and
~0.2 s (its package imports ~800 generated model classes), and an actor makes three kinds of requests.
Supported: bearer tokens (in-cluster, re-read as the kubelet rotates them; `token`/`tokenFile`), client
certificates, CA files or data. Exec and auth-provider plugins are not (actors run in-cluster in
production; the operator uses the full client).
"""
from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubechain.api.runspec import KubeCredentials

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60


@dataclass
class Connection:
    server: str
    context: ssl.SSLContext
    token: str | None = None
    token_file: Path | None = None
    _read_at: float = field(default=0.0, repr=False)

    def headers(self) -> dict[str, str]:
        if self.token_file is not None and time.monotonic() - self._read_at > TOKEN_REREAD_SECONDS:
            self.token, self._read_at = self.token_file.read_text().strip(), time.monotonic()
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def from_credentials(kube: KubeCredentials) -> Connection:
    """A connection with the run's own token: nothing of it outlives the run (a pooled actor's next run is
    handed its own)."""
    context = ssl.create_default_context(cadata=kube.ca_data) if kube.ca_data else ssl.create_default_context()
    if kube.insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return Connection(kube.server.rstrip("/"), context, token=kube.token.get_secret_value())


def from_environment() -> Connection:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster()
    return from_kubeconfig(Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config"))


def in_cluster() -> Connection:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    return Connection(f"https://{host}:{port}", context, token_file=SERVICE_ACCOUNT / "token")


def _file(entry: dict, key: str, base: Path) -> str | None:
    """The path of `key` (or of `key-data`, written to a private temp file)."""
    if data := entry.get(f"{key}-data"):
        handle = tempfile.NamedTemporaryFile(delete=False, prefix="kubechain-", suffix=".pem")
        handle.write(base64.b64decode(data))
        handle.close()
        return handle.name
    if path := entry.get(key):
        return str(base / path) if not os.path.isabs(path) else path
    return None


def from_kubeconfig(path: Path) -> Connection:
    import yaml

    config = yaml.safe_load(path.read_text())
    name = config.get("current-context") or config["contexts"][0]["name"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next((u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {})
    base = path.parent
    ssl_context = ssl.create_default_context(cafile=_file(cluster, "certificate-authority", base))
    if cluster.get("insecure-skip-tls-verify"):
        ssl_context.check_hostname, ssl_context.verify_mode = False, ssl.CERT_NONE
    if cert := _file(user, "client-certificate", base):
        ssl_context.load_cert_chain(cert, _file(user, "client-key", base))
    token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
    return Connection(cluster["server"].rstrip("/"), ssl_context, token=user.get("token"), token_file=token_file)
