"""The web console's pure parts and its HTTP rules, with a fake apiserver (TokenReview / SubjectAccessReview)."""
from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client

from kubechain.api.v1alpha1 import (ActorRef, CallState, FunctionCall, Message, Phase, PhaseTransition, ToolCall,
                                    ToolCallRecord, Usage, WaitingFor)
from kubechain.ui import views
from kubechain.ui.app import SECURITY_HEADERS, Settings, make_app
from kubechain.ui.auth import COOKIE, Authorizer, TTLCache, User, token_of, with_token
from kubechain.ui.ratelimit import SignInLimited, SignInLimiter
from kubechain.ui.watch import Hub

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def run(name="r", namespace="ns", uid="u1", parent_uid=None, **status):
    labels = {"kubechain.dev/parent-uid": parent_uid} if parent_uid else {}
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": labels,
                         "creationTimestamp": "2026-11-26T10:00:00Z", "resourceVersion": "1"},
            "spec": {"taskRef": {"name": "t"}}, "status": status}


# --- views: the JSON the page shows ---------------------------------------------------------------------

def test_a_taskrun_row_has_the_list_columns_and_counts_calls_waiting_for_a_human():
    waiting = [{"id": "a", "state": "Waiting", "waitingFor": "Answer"}, {"id": "b", "state": "Waiting",
                                                                          "waitingFor": "ChildRun"}]
    row = views.taskrun_row(run(phase="PausedForUserInput", step=3, agent="helper", usage={"totalTokens": 42},
                                toolCallHistory=waiting))
    assert row == {"namespace": "ns", "name": "r", "created": "2026-11-26T10:00:00Z", "agent": "helper",
                   "phase": "PausedForUserInput", "step": 3, "tokens": 42, "parent": "", "message": "",
                   "waiting": 1}


def test_an_agent_row_names_its_llm_and_tools_and_nothing_else_of_the_spec():
    agent = {"metadata": {"name": "a", "namespace": "ns"},
             "spec": {"llmRef": {"name": "gpt"}, "systemPrompt": "secret sauce"},
             "status": {"ready": True, "tools": ["calc", "ask"]}}
    row = views.agent_row(agent)
    assert (row["llm"], row["tools"], row["ready"]) == ("gpt", ["calc", "ask"], True)
    assert "secret sauce" not in json.dumps(row)


@pytest.mark.parametrize("traceparent, expected", [
    (TRACEPARENT, "0af7651916cd43dd8448eb211c80319c"), (None, None), ("garbage", None),
    ("00-<script>alert(1)</script>xxxxxxxxxxxxxxxxxx-b7ad6b7169203331-01", None)])
def test_trace_id_of_a_traceparent(traceparent, expected):
    assert views.trace_id(traceparent) == expected


def test_links_to_the_actor_in_the_ray_dashboard_and_to_the_trace():
    from kubechain.api.v1alpha1 import TaskRunStatus
    status = TaskRunStatus(actor=ActorRef(name="ns/r/u1", namespace="kubechain", id="ab12"), traceparent=TRACEPARENT)
    assert views.links(status, "http://ray:8265/", "http://jaeger/trace/{trace_id}?x=1") == {
        "ray": "http://ray:8265/#/actors/ab12", "trace": "http://jaeger/trace/0af7651916cd43dd8448eb211c80319c?x=1"}
    assert views.links(status, None, "http://tempo/trace") == {
        "ray": None, "trace": "http://tempo/trace/0af7651916cd43dd8448eb211c80319c"}
    no_id = TaskRunStatus(actor=ActorRef(name="ns/r/u1", namespace="kubechain"))
    assert views.links(no_id, "http://ray:8265", None)["ray"] == "http://ray:8265/#/actors"


def test_child_runs_form_a_tree_by_parent_uid():
    root, child, grandchild, other = (run("root", uid="1"), run("root-a", uid="2", parent_uid="1"),
                                      run("root-a-b", uid="3", parent_uid="2"), run("other", uid="4"))
    tree = views.child_tree(root, [root, child, grandchild, other])
    assert [(n["name"], [g["name"] for g in n["children"]]) for n in tree] == [("root-a", ["root-a-b"])]


def test_a_detail_has_the_transcript_journal_and_the_calls_waiting_for_a_human():
    obj = run(phase="PausedForUserInput", traceparent=TRACEPARENT,
              phaseHistory=[PhaseTransition(phase=Phase.RUNNING, time="t", reason="Scheduled").model_dump(by_alias=True)],
              usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7).model_dump(by_alias=True))
    messages = [Message(role="user", content="hi"),
                Message(role="assistant", tool_calls=[ToolCall(id="c1", function=FunctionCall(name="ask",
                                                                                               arguments='{"q":1}'))])]
    calls = [ToolCallRecord(id="c1", step=1, tool="ask", arguments="{}", state=CallState.WAITING,
                            waiting_for=WaitingFor.ANSWER, question="Which colour?")]
    detail = views.taskrun_detail(obj, messages, calls, [], "http://ray", None)
    assert detail["transcript"][1]["toolCalls"] == [{"id": "c1", "name": "ask", "arguments": '{"q":1}'}]
    assert [c["question"] for c in detail["waiting"]] == ["Which colour?"]
    cancelled = {**obj, "status": {**obj["status"], "phase": "Failed"}}  # the record still says Waiting
    assert views.taskrun_detail(cancelled, messages, calls, [])["waiting"] == []
    assert views.taskrun_row(cancelled)["waiting"] == 0
    assert detail["usage"] == {"promptTokens": 3, "completionTokens": 4, "totalTokens": 7, "cachedPromptTokens": 0}
    assert detail["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert detail["phaseHistory"][0]["reason"] == "Scheduled"


# --- auth: identity, cached answers ---------------------------------------------------------------------

def test_the_bearer_header_wins_over_the_cookie():
    assert token_of({"Authorization": "Bearer abc"}, {COOKIE: "def"}) == "abc"
    assert token_of({"Authorization": "Basic xyz"}, {COOKIE: "def"}) == "def"
    assert token_of({}, {}) is None


def test_cached_answers_expire():
    now = [0.0]
    cache = TTLCache(ttl=10, clock=lambda: now[0])
    cache.put("k", True)
    assert cache.get("k") is True
    now[0] = 10.0
    assert cache.get("k") is None


def test_a_callers_client_carries_their_token_and_none_of_the_consoles_credentials():
    own = client.Configuration()
    own.host, own.api_key, own.cert_file, own.key_file = "https://k", {"authorization": "Bearer console"}, "c", "k"
    mine = with_token(own, "alice-token")
    assert mine.host == "https://k" and mine.api_key == {"authorization": "Bearer alice-token"}
    assert (mine.cert_file, mine.key_file) == (None, None) and own.api_key == {"authorization": "Bearer console"}


def test_access_reviews_are_cached_and_cluster_wide_access_answers_for_every_namespace(monkeypatch):
    authz = Authorizer(client.Configuration())
    asked = []

    def review(user, verb, plural, namespace):
        asked.append(namespace)
        return namespace == "mine"
    monkeypatch.setattr(authz, "_review_access", review)
    alice = User("alice", token="t")

    async def scenario():
        return [await authz.allowed(alice, "list", "taskruns", ns) for ns in ("mine", "mine", "theirs")]
    assert asyncio.run(scenario()) == [True, True, False]
    assert asked == [None, "mine", "theirs"]  # the cluster-wide answer (no) is cached too
    assert asyncio.run(authz.allowed(User("kubeconfig"), "list", "taskruns", "x"))  # local mode: no token


# --- the HTTP rules, with a fake apiserver ---------------------------------------------------------------

class FakeAuthz:
    """TokenReview: token -> user; SubjectAccessReview: (user, verb, plural, namespace or None for all)."""

    def __init__(self, grants):
        self.users = {"alice-token": User("alice", token="alice-token"), "bob-token": User("bob", token="bob-token")}
        self.grants = grants

    async def authenticate(self, token, client=None):
        return self.users.get(token)

    async def allowed(self, user, verb, plural, namespace):
        return (user.name, verb, plural, namespace) in self.grants or (user.name, verb, plural, None) in self.grants

    def api_client(self, user):
        raise AssertionError("these tests never reach the apiserver")


ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
GRANTS = {("alice", "list", "taskruns", None), ("bob", "list", "taskruns", "b")}


def console(scenario, settings=Settings(), grants=GRANTS):
    async def main():
        hub = Hub(asyncio.get_running_loop())
        for obj in (run("ra", "a"), run("rb", "b")):
            hub._publish(("taskruns", "ADDED", obj))
        async with TestClient(TestServer(make_app(settings, authz=FakeAuthz(grants), hub=hub))) as http:
            return await scenario(http, hub)
    return asyncio.run(main())


def test_every_response_carries_a_strict_csp_and_nosniff():
    async def scenario(http, hub):
        return [await http.get(path, headers=ALICE) for path in ("/", "/static/app.js", "/api/config", "/api/nope")]
    for response in console(scenario):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
    assert "script-src 'self'" in SECURITY_HEADERS["Content-Security-Policy"]
    assert "unsafe-inline" not in SECURITY_HEADERS["Content-Security-Policy"]


def test_the_page_has_no_inline_script_and_the_script_never_uses_innerhtml():
    from kubechain.ui.app import STATIC
    html = (STATIC / "index.html").read_text()
    assert '<script src="/static/app.js" defer></script>' in html and html.count("<script") == 1
    js = (STATIC / "app.js").read_text()
    assert "innerHTML" not in js.replace("never innerHTML", "") and "insertAdjacentHTML" not in js
    assert "eval(" not in js and "document.write" not in js


def test_without_a_valid_token_the_api_answers_401():
    async def scenario(http, hub):
        return [(await http.get("/api/taskruns", headers=h)).status
                for h in ({}, {"Authorization": "Bearer forged"})]
    assert console(scenario) == [401, 401]


def test_rows_are_those_the_caller_may_list():
    async def scenario(http, hub):
        return [[r["name"] for r in await (await http.get("/api/taskruns", headers=h)).json()] for h in (ALICE, BOB)]
    assert console(scenario) == [["ra", "rb"], ["rb"]]


def test_posts_need_the_csrf_header_and_the_same_origin():
    async def scenario(http, hub):
        url = "/api/namespaces/a/taskruns/ra/cancel"
        return [(await http.post(url, headers=ALICE)).status,
                (await http.post(url, headers={**ALICE, "X-Kubechain-UI": "1", "Origin": "http://evil.example"})).status,
                await (await http.post(url, headers={**ALICE, "X-Kubechain-UI": "1"})).json()]
    missing, cross, read_only = console(scenario)
    assert (missing, cross) == (403, 403)
    assert "read-only" in read_only["error"]  # and the console is read-only by default


def test_login_sets_an_httponly_samesite_strict_cookie_and_refuses_bad_tokens():
    async def scenario(http, hub):
        csrf = {"X-Kubechain-UI": "1"}
        bad = await http.post("/api/login", json={"token": "forged"}, headers=csrf)
        good = await http.post("/api/login", json={"token": "alice-token"}, headers=csrf)
        cookie = good.headers["Set-Cookie"]
        me = await (await http.get("/api/config")).json()  # the cookie jar now carries the token
        return bad.status, cookie, me
    status, cookie, me = console(scenario)
    assert status == 401
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith(f"{COOKIE}=alice-token")
    assert me == {"user": "alice", "readOnly": True, "namespace": None, "rayDashboard": False, "tracing": False}


async def next_event(response) -> tuple[str, dict]:
    event, data = "", None
    while True:
        line = (await asyncio.wait_for(response.content.readline(), 30)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            return event, data


def test_the_event_stream_sends_a_snapshot_then_only_the_changes_the_caller_may_see():
    async def scenario(http, hub):
        response = await http.get("/api/watch?kinds=taskruns", headers=BOB)
        assert response.headers["Content-Type"] == "text/event-stream"
        snapshot = await next_event(response)
        hub.emit(("taskruns", "MODIFIED", run("ra", "a", phase="Running")))  # bob may not list namespace a
        hub.emit(("taskruns", "MODIFIED", run("rb", "b", phase="Completed")))
        change = await next_event(response)
        response.close()
        return snapshot, change
    (kind, snapshot), (kind2, change) = console(scenario)
    assert kind == "snapshot" and [i["name"] for i in snapshot["items"]] == ["rb"]
    assert kind2 == "change" and (change["type"], change["item"]["name"], change["item"]["phase"]) == \
        ("MODIFIED", "rb", "Completed")


def test_only_a_local_console_treats_a_request_without_a_token_as_the_kubeconfig_user():
    async def who(authz):
        return await authz.authenticate(None)
    assert asyncio.run(who(Authorizer(client.Configuration()))) is None
    local = asyncio.run(who(Authorizer(client.Configuration(), as_kubeconfig_user=True)))
    assert local is not None and local.token is None


def test_an_event_stream_ends_when_its_token_stops_working(monkeypatch):
    from kubechain.ui import app as ui_app
    monkeypatch.setattr(ui_app, "KEEPALIVE_SECONDS", 0.05)
    authz = FakeAuthz(GRANTS)

    async def main():
        hub = Hub(asyncio.get_running_loop())
        async with TestClient(TestServer(make_app(Settings(), authz=authz, hub=hub))) as http:
            response = await http.get("/api/watch?kinds=taskruns", headers=ALICE)
            assert (await next_event(response))[0] == "snapshot"
            await asyncio.wait_for(response.content.readline(), 30)  # a keepalive: the token still works
            del authz.users["alice-token"]  # revoked
            return await asyncio.wait_for(response.content.read(), 30)  # returns once the server ends the stream
    assert b"event:" not in asyncio.run(main())


# --- failed sign-ins, limited per client address ------------------------------------------------------------

def test_a_bucket_holds_a_burst_then_refills_at_its_rate_per_address():
    now = [0.0]
    limiter = SignInLimiter(burst=2, per_minute=6, clock=lambda: now[0])  # one back every 10 s
    limiter.take("a"), limiter.take("a")
    with pytest.raises(SignInLimited) as refused:
        limiter.take("a")
    assert refused.value.retry_after == pytest.approx(10) and "try again in 10 s" in str(refused.value)
    limiter.take("b")  # another address has its own bucket
    now[0] = 10.0
    limiter.take("a")
    with pytest.raises(SignInLimited):
        limiter.take("a")
    limiter.give_back("a")  # a good token costs nothing
    limiter.take("a")


def test_only_unknown_tokens_are_checked_and_only_bad_ones_use_the_bucket_up(monkeypatch):
    authz = Authorizer(client.Configuration(), limiter=SignInLimiter(burst=2, per_minute=0.001))
    reviewed = []
    monkeypatch.setattr(authz, "_review_token", lambda token: reviewed.append(token) or (
        User("alice", token=token) if token == "alice-token" else None))

    async def main():
        assert (await authz.authenticate("alice-token", "1.2.3.4")).name == "alice"  # given back
        assert await authz.authenticate("forged-1", "1.2.3.4") is None
        assert await authz.authenticate("forged-2", "1.2.3.4") is None
        with pytest.raises(SignInLimited):
            await authz.authenticate("forged-3", "1.2.3.4")  # refused before a TokenReview
        assert (await authz.authenticate("alice-token", "1.2.3.4")).name == "alice"  # known: not held up
        assert await authz.authenticate("forged-4", "5.6.7.8") is None  # another address
        assert await authz.authenticate("forged-5") is None  # the console's own re-checks are not limited
    asyncio.run(main())
    assert reviewed == ["alice-token", "forged-1", "forged-2", "forged-4", "forged-5"]


def test_a_burst_of_bad_sign_ins_is_refused_with_429(monkeypatch):
    authz = Authorizer(client.Configuration(), limiter=SignInLimiter(burst=3, per_minute=0.001))
    monkeypatch.setattr(authz, "_review_token", lambda token: None)

    async def main():
        hub = Hub(asyncio.get_running_loop())
        async with TestClient(TestServer(make_app(Settings(), authz=authz, hub=hub))) as http:
            logins = [await http.post("/api/login", json={"token": f"t{i}"}, headers={"X-Kubechain-UI": "1"})
                      for i in range(4)]
            bearer = await http.get("/api/taskruns", headers={"Authorization": "Bearer t9"})
            return [r.status for r in logins], bearer.status, await bearer.json(), bearer.headers.get("Retry-After")
    statuses, bearer, body, retry = asyncio.run(main())
    assert statuses == [401, 401, 401, 429] and bearer == 429
    assert body["error"].startswith("too many failed sign-in attempts from your address") and int(retry) >= 1
