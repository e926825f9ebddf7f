"""No borrowed Secrets (kubechain/core/access.py): which fields use what, the reviews that decide it, the refusals;
and the operator's cached reviews (kubechain/operator/access.py) over a fake apiserver."""
import asyncio

import pytest

from kubechain.core.access import Access, Author, Use, alternatives, needs_check, questions, refusals, review_body, uses
from kubechain.operator.access import AccessReviews

TENANT = Author("system:serviceaccount:b:tenant", "u-1", ("system:serviceaccounts", "system:authenticated"),
                (("authentication.kubernetes.io/pod-name", ("p",)),))


def secret(name: str) -> dict:
    return {"valueFrom": {"secretKeyRef": {"name": name, "key": "k"}}}


HTTP = {"http": {"url": "http://x", "headers": [{"name": "A", "value": "plain"}, {"name": "B", **secret("hdr")}]}}
CONTAINER = {"container": {"image": "busybox", "env": [{"name": "E", **secret("env")}], "serviceAccountName": "bot"}}


@pytest.mark.parametrize("kind,spec,expected", [
    ("LLM", {"model": "m", "apiKeySecretRef": {"name": "db-password", "key": "k"}},
     [Use("spec.apiKeySecretRef", "Secret", "db-password")]),
    ("LLM", {"model": "m"}, []),
    ("Tool", {"execution": HTTP}, [Use("spec.execution.http.headers[1].valueFrom.secretKeyRef", "Secret", "hdr")]),
    ("Tool", {"execution": CONTAINER}, [Use("spec.execution.container.env[0].valueFrom.secretKeyRef", "Secret", "env"),
                                        Use("spec.execution.container.serviceAccountName", "ServiceAccount", "bot")]),
    ("Tool", {"execution": {"builtin": {"name": "echo"}}}, []),
    ("ToolSet", {"tools": [{"name": "t", "execution": HTTP}],
                 "mcpServers": [{"name": "s", "stdio": {"command": "c", "env": [{"name": "X", **secret("mcp-env")}]}},
                                {"name": "h", "http": {"url": "http://x", "headers": [{"name": "Y", **secret("mcp-h")}]}}]},
     [Use("spec.tools[0].execution.http.headers[1].valueFrom.secretKeyRef", "Secret", "hdr"),
      Use("spec.mcpServers[0].stdio.env[0].valueFrom.secretKeyRef", "Secret", "mcp-env"),
      Use("spec.mcpServers[1].http.headers[0].valueFrom.secretKeyRef", "Secret", "mcp-h")]),
    ("Agent", {"llmRef": {"name": "m"}}, []),
], ids=["llm-key", "llm-no-key", "http-header", "container-env-and-account", "builtin", "toolset-all", "agent"])
def test_uses_name_each_field(kind, spec, expected):
    assert uses(kind, spec) == expected


@pytest.mark.parametrize("operation,old,new,checked", [
    ("CREATE", None, {"a": 1}, True),
    ("UPDATE", {"a": 1}, {"a": 1}, False),  # labels, annotations, kopf's bookkeeping
    ("UPDATE", {"a": 1, "baseURL": "x"}, {"a": 1, "baseURL": "y"}, True),  # the Secret would go elsewhere
], ids=["create", "update-same-spec", "update-new-spec"])
def test_creates_and_spec_changes_are_checked(operation, old, new, checked):
    assert needs_check(operation, old, new) is checked


def test_a_service_account_takes_create_pods_or_its_token():
    assert alternatives(Use("f", "Secret", "s")) == (Access("get", "secrets", "s"),)
    assert alternatives(Use("f", "ServiceAccount", "bot")) == (
        Access("create", "pods"), Access("create", "serviceaccounts", "bot", subresource="token"))


def test_review_body_carries_the_whole_user():
    body = review_body(TENANT, "b", Access("get", "secrets", "db-password"))
    assert body["spec"] == {"user": TENANT.username, "uid": "u-1", "groups": list(TENANT.groups),
                            "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
                            "resourceAttributes": {"namespace": "b", "verb": "get", "group": "", "resource": "secrets",
                                                   "subresource": "", "name": "db-password"}}
    assert Author.from_userinfo({"username": TENANT.username, "uid": "u-1", "groups": list(TENANT.groups),
                                 "extra": {"authentication.kubernetes.io/pod-name": ["p"]}}) == TENANT


def test_refusals_name_the_field_user_and_secret_and_fail_closed():
    found = uses("LLM", {"apiKeySecretRef": {"name": "db-password", "key": "k"}}) + [Use("f", "ServiceAccount", "bot")]
    [secret_refused, account_refused] = refusals(found, TENANT, "b", {})  # no answers: refused
    assert secret_refused.startswith("spec.apiKeySecretRef: user system:serviceaccount:b:tenant may not get Secret "
                                     "'db-password' in namespace 'b'")
    assert "may not run pods as ServiceAccount 'bot'" in account_refused
    token = Access("create", "serviceaccounts", "bot", subresource="token")
    assert refusals(found, TENANT, "b", {Access("get", "secrets", "db-password"): True, token: True}) == []
    assert questions(found + found) == [Access("get", "secrets", "db-password"), Access("create", "pods"), token]


class FakeKube:
    def __init__(self, allowed: set[str], fail: bool = False):
        self.allowed, self.fail, self.asked = allowed, fail, []

    async def access_review(self, body: dict) -> bool:
        attributes = body["spec"]["resourceAttributes"]
        self.asked.append(attributes["name"])
        if self.fail:
            raise OSError("apiserver down")
        return attributes["name"] in self.allowed


def test_reviews_are_cached_briefly_and_a_failed_review_is_a_no():
    kube = FakeKube({"mine"})
    reviews = AccessReviews(kube)
    found = [Use("f", "Secret", "mine"), Use("g", "Secret", "theirs")]
    first = asyncio.run(reviews.refusals(found, TENANT, "b"))
    again = asyncio.run(reviews.refusals(found, TENANT, "b"))
    assert first == again and len(first) == 1 and "'theirs'" in first[0]
    assert sorted(kube.asked) == ["mine", "theirs"]  # the second round was answered from the cache
    down = AccessReviews(FakeKube(set(), fail=True))
    assert len(asyncio.run(down.refusals(found, TENANT, "b"))) == 2
