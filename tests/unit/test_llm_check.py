"""The check of an LLM's key and model: what the provider's answers mean, when to ask again, and the asking itself
against the scripted server (real HTTP, the real openai SDK)."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kubechain.api.v1alpha1 import LLMSpec, ReadinessReason
from kubechain.core.llmcheck import Answer, Verdict, due, masked, needs_listing, readiness, secret_changed, verdict
from kubechain.demo.llm_server import ScriptedLLMServer
from kubechain.operator.llmcheck import ask

SPEC = LLMSpec.model_validate({"baseURL": "http://llm:8000/v1", "model": "m"})
KEY = "sk-secret-key"
OK, MISSING = Answer(200), Answer(404, "404: Not Found")
NOT_FOUND = Answer(404, "The model `m` does not exist or you do not have access to it.", code="model_not_found")


@pytest.mark.parametrize("retrieved, listed, reason, ready, says", [
    pytest.param(OK, None, "Ready", True, "openai model 'm' verified", id="200: verified"),
    pytest.param(Answer(401, "Incorrect API key provided."), None, "Unauthorized", False,
                 "the provider refused the API key: Incorrect API key provided.", id="401: the key is refused"),
    pytest.param(Answer(403, "Project does not have access"), None, "Unauthorized", False, "does not have access",
                 id="403: the key may not"),
    pytest.param(NOT_FOUND, None, "ModelNotFound", False, "model 'm' not found: The model `m` does not exist",
                 id="404 model_not_found: unknown model, no listing needed"),
    pytest.param(Answer(None, "Connection error."), None, "Unreachable", False,
                 "no answer from http://llm:8000/v1: Connection error.", id="no answer: unreachable"),
    pytest.param(Answer(503, "overloaded"), None, "Unreachable", False, "http://llm:8000/v1 answered 503: overloaded",
                 id="5xx: unreachable"),
    pytest.param(Answer(429, "slow down"), None, "Unreachable", False, "answered 429", id="429: unreachable"),
    pytest.param(MISSING, Answer(200, models=("a", "m")), "Ready", True, "verified (listed by the server)",
                 id="no retrieve endpoint, the listing has the model: verified"),
    pytest.param(MISSING, Answer(200, models=("a", "b")), "ModelNotFound", False,
                 "model 'm' is not among the 2 models the server lists", id="the listing lacks the model"),
    pytest.param(MISSING, MISSING, "Ready", True, "could not be verified (the server does not list its models)",
                 id="no models endpoints: ready, unverified"),
    pytest.param(Answer(405), Answer(501), "Ready", True, "does not list its models", id="405 then 501: unverified"),
    pytest.param(MISSING, Answer(401, "bad key"), "Unauthorized", False, "bad key", id="the listing refuses the key"),
    pytest.param(MISSING, Answer(None, "timed out"), "Unreachable", False, "timed out",
                 id="the listing does not answer"),
    pytest.param(MISSING, Answer(200, "not a page", readable=False), "Ready", True, "could not be verified",
                 id="an unreadable listing: unverified"),
    pytest.param(Answer(400, "weird"), None, "Ready", True, "could not be verified (GET /models/m answered 400: weird)",
                 id="another 4xx: unverified, with what it said"),
    pytest.param(Answer(200, "<html>", readable=False), None, "Ready", True, "could not be verified",
                 id="a web page, not a model: unverified"),
])
def test_what_the_answers_mean(retrieved, listed, reason, ready, says):
    assert needs_listing(retrieved) is (listed is not None)
    result = readiness(SPEC, retrieved, listed, KEY)
    assert (result.reason, result.ready) == (reason, ready)
    assert says in result.message


def test_the_key_never_reaches_the_message():
    echoed = Answer(401, f"Incorrect API key provided: {KEY}. Find yours at https://platform.example/keys")
    result = readiness(SPEC, echoed, None, KEY)
    assert KEY not in result.message and "Incorrect API key provided: ***." in result.message
    assert masked("x" * 2000, None) == "x" * 500  # a status-sized message
    assert masked("a k b", "k") == "a k b"  # too short to be a key: masking it would garble the message


def test_an_answer_that_needs_a_listing_is_not_read_without_one():
    with pytest.raises(ValueError):
        readiness(SPEC, MISSING, None)


@pytest.mark.parametrize("last, age, expected", [
    pytest.param(None, 0, True, id="never checked here: now"),
    pytest.param(Verdict(0, ReadinessReason.READY), 299, False, id="verified: not before the period"),
    pytest.param(Verdict(0, ReadinessReason.READY), 300, True, id="verified: after the period"),
    pytest.param(Verdict(0, ReadinessReason.UNAUTHORIZED), 30, False, id="refused key: its Secret's events tell"),
    pytest.param(Verdict(0, ReadinessReason.SECRET_NOT_FOUND), 0, True, id="missing Secret: every tick (no request)"),
    pytest.param(Verdict(0, ReadinessReason.UNREACHABLE, failures=1), 3, True, id="unreachable once: after a tick"),
    pytest.param(Verdict(0, ReadinessReason.UNREACHABLE, failures=3), 11, False, id="unreachable 3 times: backs off"),
    pytest.param(Verdict(0, ReadinessReason.UNREACHABLE, failures=3), 12, True, id="unreachable 3 times: 12 s"),
    pytest.param(Verdict(0, ReadinessReason.UNREACHABLE, failures=20), 11, False, id="backing off up to 4 ticks"),
    pytest.param(Verdict(0, ReadinessReason.UNREACHABLE, failures=20), 12, True, id="then every 4 ticks"),
])
def test_when_the_timer_checks_again(last, age, expected):
    assert due(last, age, every=300, retry=3) is expected


def test_the_back_off_never_exceeds_the_period():
    assert not due(Verdict(0, ReadinessReason.UNREACHABLE, failures=3), 9, every=10, retry=3)
    assert due(Verdict(0, ReadinessReason.UNREACHABLE, failures=3), 10, every=10, retry=3)


def test_failures_count_only_in_a_row():
    first = verdict(None, ReadinessReason.UNREACHABLE, 1.0)
    second = verdict(first, ReadinessReason.UNREACHABLE, 2.0)
    assert (first.failures, second.failures, second.at) == (1, 2, 2.0)
    assert verdict(second, ReadinessReason.READY, 3.0).failures == 0


@pytest.mark.parametrize("event, seen, version, expected", [
    pytest.param("ADDED", None, "1", True, id="created"),
    pytest.param("MODIFIED", "1", "2", True, id="changed"),
    pytest.param("DELETED", "2", "2", True, id="deleted"),
    pytest.param(None, None, "5", False, id="listed at start-up: the LLMs' resume handlers check them"),
    pytest.param(None, "5", "5", False, id="listed again unchanged (a restarted watch)"),
    pytest.param(None, "5", "6", True, id="listed again, changed while the watch was down"),
])
def test_which_secret_events_call_for_a_check(event, seen, version, expected):
    assert secret_changed(event, seen, version) is expected


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(api_key=KEY) as srv:
        srv.set_unknown_models(["retired"])
        yield srv


def check(base_url: str, model: str, key: str | None = KEY):
    spec = LLMSpec.model_validate({"baseURL": base_url, "model": model})
    return readiness(spec, *asyncio.run(ask(spec, key)), key=key)


def test_asking_the_scripted_server(server):
    assert check(server.base_url, "anything").message == "openai model 'anything' verified"
    assert check(server.base_url, "org/with a slash").ready  # the SDK quotes the name into the path
    assert check(server.base_url, "anything", key="sk-wrong").reason == ReadinessReason.UNAUTHORIZED
    assert check(server.base_url, "anything", key=None).reason == ReadinessReason.UNAUTHORIZED
    assert check(server.base_url, "retired").reason == ReadinessReason.MODEL_NOT_FOUND


def test_asking_a_server_that_does_not_list_models():
    with ScriptedLLMServer(lists_models=False) as bare:
        result = check(bare.base_url, "anything", key=None)
    assert (result.ready, result.reason) == (True, ReadinessReason.READY)
    assert "could not be verified" in result.message
    assert [r["model"] for r in bare.requests()] == []  # it asked the models endpoints, never for a completion


def test_asking_where_nobody_listens():
    with ScriptedLLMServer() as gone:
        base_url = gone.base_url
    result = check(base_url, "anything")  # its port is closed now
    assert (result.ready, result.reason) == (False, ReadinessReason.UNREACHABLE)
    assert result.message.startswith(f"no answer from {base_url}: Connection error.")
