"""The webhook process's parts without a cluster: answering a review with kopf's conventions, the configuration
it writes, a rotation's certificates, and an informer's view."""
from __future__ import annotations

import asyncio
import base64
import datetime
import json
import ssl

import kopf
import pytest

from kubechain.core.certrotation import Step
from kubechain.operator.admission import hooks
from kubechain.operator.admission.certs import ServingTLS, fresh, stepped
from kubechain.operator.admission.informers import Informer
from kubechain.operator.admission.publish import covers
from kubechain.operator.controllers import webhooks  # noqa: F401  (registers the hooks)

HOSTS = ["127.0.0.1", "localhost"]


def review(plural: str, obj: dict, operation: str = "CREATE", old: dict | None = None) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "operation": operation, "userInfo": {"username": "someone"}, "namespace": "ns",
        "resource": {"group": "kubechain.dev", "version": "v1alpha1", "resource": plural},
        "object": obj, "oldObject": old}}


def test_a_refusal_carries_the_validators_message_and_code():
    bad = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "TaskRun", "metadata": {"name": "r", "namespace": "ns"},
           "spec": {"agentRef": {"name": "a"}, "userInput": "hi", "responses": {"call_1": {"answer": "x"}}}}
    indexes = {"namespace_priorities": {}, "run_quotas": {}, "fork_sources": {}}
    answer = asyncio.run(hooks.answer(hooks.HOOKS["validate-taskruns"], review("taskruns", bad), kopf.Memo(), indexes))
    assert answer["response"]["uid"] == "u1" and answer["response"]["allowed"] is False
    assert answer["response"]["status"] == {"message": "spec.responses must be empty when a TaskRun is created",
                                            "code": 422}


def test_defaults_come_back_as_a_json_patch():
    llm = {"apiVersion": "kubechain.dev/v1alpha1", "kind": "LLM", "metadata": {"name": "m", "namespace": "ns"},
           "spec": {"model": "m"}}
    answer = asyncio.run(hooks.answer(hooks.HOOKS["default-llms"], review("llms", llm), kopf.Memo(), {}))["response"]
    ops = {op["path"]: op.get("value") for op in json.loads(base64.b64decode(answer["patch"]))}
    assert answer["allowed"] and answer["patchType"] == "JSONPatch" and ops["/spec/provider"] == "openai"


def test_the_configuration_names_and_paths_are_kopfs():
    config = {"service": {"namespace": "kubechain-system", "name": "kubechain-webhooks", "port": 443, "path": ""},
              "caBundle": "Q0E="}
    validating = {w["name"]: w for w in hooks.webhooks(config, mutating=False)}
    hook = validating["validate-tools.kubechain.dev"]
    assert hook["failurePolicy"] == "Fail" and hook["clientConfig"]["service"]["path"] == "/validate-tools"
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    mutating = {w["name"]: w for w in hooks.webhooks({"url": "https://127.0.0.1:1"}, mutating=True)}
    assert mutating["default-llms.kubechain.dev"]["failurePolicy"] == "Ignore"
    assert mutating["default-llms.kubechain.dev"]["clientConfig"]["url"] == "https://127.0.0.1:1/default-llms"


@pytest.mark.parametrize("desired,actual,expected", [
    ({"a": 1}, {"a": 1, "defaulted": 2}, True),
    ({"a": 1}, {"a": 2}, False),
    ({"url": None, "service": {"x": 1}}, {"service": {"x": 1, "port": 443}}, True),
    ({"url": None}, {"url": "https://old"}, False),
    ([{"a": 1}], [{"a": 1}, {"a": 2}], False),
], ids=["defaults-added", "changed", "none-is-absent", "none-present", "list-length"])
def test_only_what_differs_is_written(desired, actual, expected):
    assert covers(desired, actual) is expected


def handshake_ca(tls: ServingTLS, ca: bytes) -> bool:
    """Whether a client trusting `ca` accepts the certificate `tls` serves (an in-memory TLS handshake)."""
    client = ssl.create_default_context(cadata=ca.decode())
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c, s = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1"), tls.context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(5):
        for side, out, into in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return False
            into.write(out.read())
    try:
        c.do_handshake()
        return True
    except ssl.SSLError:
        return False


def test_every_step_of_a_rotation_is_trusted_by_the_bundle_of_the_step_before(tmp_path):
    """The apiserver may still hold the previous step's bundle while a server already serves this step's cert."""
    lifetime = datetime.timedelta(days=1)
    material, tls = fresh(HOSTS, lifetime), ServingTLS(tmp_path)
    tls.load(material)
    for step in (Step.STAGE, Step.PROMOTE, Step.TRIM):
        before = material
        material = stepped(material, step, HOSTS, lifetime)
        tls.load(material)  # the same context, reloaded: what a running server does
        assert handshake_ca(tls, before.bundle) and handshake_ca(tls, material.bundle), step
    assert material.bundle == material.ca and material.staged is None
    assert not handshake_ca(tls, fresh(HOSTS, lifetime).ca)  # and a stranger's CA is not trusted


def test_an_informer_view_follows_adds_changes_and_deletes():
    loop = asyncio.new_event_loop()
    informer = Informer("Tool", lambda **_: None, lambda name, namespace, spec, **_: {(namespace, name): spec}, loop)
    tool = lambda name, d: {"metadata": {"namespace": "ns", "name": name}, "spec": {"d": d}}  # noqa: E731
    informer._replace_all([tool("a", 1), tool("b", 1)])
    informer._apply("MODIFIED", tool("a", 2))
    informer._apply("DELETED", tool("b", 1))
    informer._apply("ADDED", tool("c", 3))
    assert dict(informer.view) == {("ns", "a"): [{"d": 2}], ("ns", "c"): [{"d": 3}]}
    loop.close()


class FakeSecrets:
    """CoreV1Api's Secret calls as SecretCertificates makes them: create-if-absent, resourceVersion-checked update.
    `race`: another replica creates the Secret between this one's read (404) and its create."""

    def __init__(self, race=None):
        self.secret, self.version, self.race = None, 0, race

    def read_namespaced_secret(self, name, namespace, **kwargs):
        from kubernetes.client.exceptions import ApiException
        if self.secret is None:
            raise ApiException(status=404)
        return type("Response", (), {"data": json.dumps(self.secret)})()

    def create_namespaced_secret(self, namespace, body):
        from kubernetes.client.exceptions import ApiException
        if self.race is not None:
            self.race, racer = None, self.race
            racer()  # the other replica wins
        if self.secret is not None:
            raise ApiException(status=409)
        return self._write(body)

    def replace_namespaced_secret(self, name, namespace, body):
        from kubernetes.client.exceptions import ApiException
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise ApiException(status=409)
        return self._write(body)

    def _write(self, body):
        self.version += 1
        self.secret = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return type("Written", (), {"metadata": type("Meta", (), {"resource_version": str(self.version)})()})()


def certificates(api: FakeSecrets, overlap: float = 0.0):
    from kubechain.operator.admission.certs import SecretCertificates

    store = SecretCertificates("kubechain-system", "cert", HOSTS, datetime.timedelta(days=1),
                               datetime.timedelta(seconds=overlap))
    store._core = api
    return store


def test_two_replicas_racing_to_create_the_certificate_serve_the_winners():
    api = FakeSecrets()
    winner = certificates(api)
    api.race = winner.current  # it creates the Secret while the loser is between its read and its create
    loser = certificates(api).current()
    assert loser.cert == winner.current().cert and api.version == 1


def test_a_rotation_step_is_written_once_when_two_replicas_take_it():
    api = FakeSecrets()
    a, b = certificates(api), certificates(api)
    seen = a.current()
    late = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=0.9)  # past two thirds
    staged = a.rotate(seen, late)
    assert staged.staged is not None and staged.bundle.count(b"BEGIN CERTIFICATE") == 2
    again = b.rotate(seen, late)  # b read the Secret before a's step: its write is refused, it serves a's
    assert again.staged == staged.staged and api.version == 2
