"""The actors' Kubernetes credentials: a namespace's account made once, its token shared by the namespace's runs
while it has more than half its life left, a vanished account made again; the actor's connection uses the run's
token (and its renewal), never the process's own identity."""
import asyncio
import ssl

import pytest
from pydantic import SecretStr

from actors import kubeconn
from actors.checkpoint import KubeREST
from kubechain.api.runspec import KubeCredentials
from kubechain.core.builders import actor_account, actor_binding
from kubechain.operator.credentials import ActorCredentials


class FakeKube:
    def __init__(self, clock):
        self.clock, self.accounts, self.minted, self.ensured = clock, set(), 0, 0  # clock(): seconds since the epoch

    async def ensure_actor_account(self, namespace):
        self.ensured += 1
        self.accounts.add(namespace)

    async def account_token(self, namespace, account, seconds):
        assert account == "kubechain-actor"
        if namespace not in self.accounts:
            return None
        self.minted += 1
        return f"token-{namespace}-{self.minted}", self.clock() + seconds

    def connection(self):
        return "https://10.0.0.1:443", None, False


class Clock:
    now = 1_000_000.0

    def __call__(self):
        return self.now


def test_a_namespace_shares_a_token_until_half_its_life_then_gets_a_new_one():
    clock = Clock()
    kube = FakeKube(clock)
    credentials = ActorCredentials(kube, seconds=3600, clock=clock)
    first = asyncio.run(credentials.issue("a"))
    assert first.token.get_secret_value() == "token-a-1" and first.expires_at == clock.now + 3600
    assert first.server == "https://10.0.0.1:443" and credentials.renew_at(first) == clock.now + 1800
    clock.now += 1799
    assert asyncio.run(credentials.issue("a")) is first  # a burst of runs: one TokenRequest
    assert asyncio.run(credentials.issue("b")).token.get_secret_value() == "token-b-2"  # namespaces never share
    clock.now += 1
    assert asyncio.run(credentials.issue("a")).token.get_secret_value() == "token-a-3"
    assert kube.ensured == 3  # at each mint: a deleted account or binding comes back


def test_an_account_deleted_meanwhile_is_made_again_at_the_next_mint():
    clock = Clock()
    kube = FakeKube(clock)
    credentials = ActorCredentials(kube, seconds=600, clock=clock)
    asyncio.run(credentials.issue("a"))
    kube.accounts.clear()
    clock.now += 600
    assert asyncio.run(credentials.issue("a")).token.get_secret_value() == "token-a-2" and "a" in kube.accounts


def test_the_account_mounts_nothing_and_is_bound_to_the_actor_role_in_its_namespace_only():
    assert actor_account("a")["automountServiceAccountToken"] is False
    binding = actor_binding("a")
    assert binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] == "a"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "kubechain-actor"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubechain-actor", "namespace": "a"}]


def run_credentials(token="one", **extra) -> KubeCredentials:
    return KubeCredentials(server="https://127.0.0.1:6443/", token=SecretStr(token), expires_at=0, **extra)


def test_the_actor_connects_with_the_runs_token_and_takes_its_renewal(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")  # the process's own identity is never read
    rest = KubeREST.for_run(run_credentials(insecure=True))
    assert rest._connection.server == "https://127.0.0.1:6443"
    assert rest._connection.headers() == {"Authorization": "Bearer one"}
    assert rest._connection.context.verify_mode == ssl.CERT_NONE
    rest.renew(run_credentials("two"))
    assert rest._connection.headers() == {"Authorization": "Bearer two"}
    assert "s3cr3t" not in repr(run_credentials("s3cr3t")) and "s3cr3t" not in run_credentials("s3cr3t").model_dump_json()


def test_the_runs_ca_is_verified(tmp_path):
    from kubechain.operator.webhook_server import ensure_certificates

    ca, _, _ = ensure_certificates(tmp_path / "pki", ["127.0.0.1"])
    connection = kubeconn.from_credentials(run_credentials(ca_data=ca.read_text()))
    assert connection.context.verify_mode == ssl.CERT_REQUIRED and connection.context.get_ca_certs()


@pytest.mark.parametrize("holds,expected", [("uid-1", True), ("uid-2", False)])
def test_a_renewal_reaches_only_the_run_it_is_for(holds, expected):
    from actors.taskrun_actor import TaskRunActor
    from kubechain.api.runspec import RunSpec

    actor = TaskRunActor()
    actor.spec = RunSpec.model_construct(taskrun=type("Ref", (), {"uid": holds})(), kube=run_credentials())
    assert asyncio.run(actor.renew("uid-1", run_credentials("two"))) is expected
    assert actor.spec.kube.token.get_secret_value() == ("two" if expected else "one")


class FakeRay:
    def __init__(self, fail_first: bool = False):
        self.renewed, self.fail_first = [], fail_first

    def renew(self, handle, uid, kube):
        if self.fail_first and not self.renewed:
            self.renewed.append(None)
            raise TimeoutError("the actor did not answer")
        self.renewed.append((handle, uid, kube.token.get_secret_value()))


def renewals(held_for: float | None, lifetime: float, watch: float, ray: FakeRay) -> list:
    import time

    from kubechain.api.runspec import TaskRunRef
    from kubechain.operator.credentials import keep_renewed

    kube = FakeKube(time.time)
    credentials = ActorCredentials(kube, seconds=lifetime, clock=time.time)
    ref = TaskRunRef(namespace="a", name="r", uid="uid-1")

    async def scenario():
        held = await credentials.issue("a") if held_for is not None else None
        renewer = asyncio.create_task(keep_renewed(credentials, ray, "handle", ref, held))
        await asyncio.sleep(watch)
        renewer.cancel()

    asyncio.run(scenario())
    return ray.renewed


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    from kubechain.operator import credentials

    monkeypatch.setattr(credentials, "RETRY_SECONDS", 0.05)


def test_a_supervised_run_gets_a_fresh_token_each_half_lifetime():
    renewed = renewals(held_for=0, lifetime=0.4, watch=0.5, ray=FakeRay())
    assert [uid for _, uid, _ in renewed] == ["uid-1", "uid-1"]  # at 0.2 s and 0.4 s
    assert len({token for _, _, token in renewed}) == 2 and "token-a-1" not in {t for _, _, t in renewed}


def test_an_actor_joined_after_a_restart_gets_a_token_at_once_and_a_failed_renewal_is_retried():
    renewed = renewals(held_for=None, lifetime=60, watch=0.3, ray=FakeRay(fail_first=True))
    assert renewed[0] is None and renewed[1][1:] == ("uid-1", "token-a-1")
