"""The actor's apiserver connection: kubeconfig tokens, client certificates, CA data; rotating in-cluster tokens."""
import base64
import ssl

import yaml

from actors import kubeconn


def kubeconfig(tmp_path, user, cluster_extra=None):
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443/", **(cluster_extra or {})}}],
              "users": [{"name": "u", "user": user}],
              "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_token_kubeconfig(tmp_path):
    connection = kubeconn.from_kubeconfig(kubeconfig(tmp_path, {"token": "abc"}, {"insecure-skip-tls-verify": True}))
    assert connection.server == "https://127.0.0.1:6443"
    assert connection.headers() == {"Authorization": "Bearer abc"}
    assert connection.context.verify_mode == ssl.CERT_NONE


def test_ca_data_and_rotating_token_file(tmp_path, monkeypatch):
    from kubechain.operator.webhook_server import ensure_certificates

    ca, _, _ = ensure_certificates(tmp_path / "pki", ["127.0.0.1"])
    token = tmp_path / "token"
    token.write_text("one\n")
    path = kubeconfig(tmp_path, {"tokenFile": str(token)},
                      {"certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()})
    connection = kubeconn.from_kubeconfig(path)
    assert connection.context.verify_mode == ssl.CERT_REQUIRED and connection.context.get_ca_certs()
    assert connection.headers() == {"Authorization": "Bearer one"}
    token.write_text("two\n")
    assert connection.headers() == {"Authorization": "Bearer one"}  # re-read once a minute, not per request
    monkeypatch.setattr(kubeconn, "TOKEN_REREAD_SECONDS", 0)
    assert connection.headers() == {"Authorization": "Bearer two"}
