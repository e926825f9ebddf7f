"""Runs ride out the provider: what an HTTP error means, the retry policy, and the loop's episodes."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from actors.llm import LLMError, http_error, retry_after
from actors.loop import AgentLoop
from actors.retries import HOLD_SECONDS, gave_up, next_retry, wait_left
from kubechain.api.v1alpha1 import ActorRef, LLMRetry, Phase, RetryPolicy, TaskRunStatus
from kubechain.core.lifecycle import enter

from .test_loop import SPEC, CountingExecutor, MemoryStore, ScriptedLLM, assistant

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("status, retryable, reason", [
    pytest.param(429, True, "RateLimited", id="429: rate limited, retried"),
    pytest.param(503, True, "ServerError", id="5xx: outage, retried"),
    pytest.param(408, True, "ServerError", id="408: timeout, retried"),
    pytest.param(409, True, "ServerError", id="409: conflict, retried"),
    pytest.param(401, False, "Unauthorized", id="401: bad key, fails fast"),
    pytest.param(403, False, "Unauthorized", id="403: forbidden, fails fast"),
    pytest.param(404, False, "ModelNotFound", id="404: unknown model, fails fast"),
    pytest.param(400, False, "LLMRejected", id="400: rejected request, fails fast"),
])
def test_what_an_http_error_means(status, retryable, reason):
    error = http_error(status, f"Error code: {status}", {}, NOW)
    assert (error.retryable, error.reason) == (retryable, reason)


@pytest.mark.parametrize("headers, seconds", [
    pytest.param({"retry-after": "7"}, 7.0, id="seconds"),
    pytest.param({"Retry-After": "1.5"}, 1.5, id="fractional seconds, any case"),
    pytest.param({"retry-after": "Tue, 01 Dec 2026 12:00:30 GMT"}, 30.0, id="HTTP-date"),
    pytest.param({"retry-after": "Tue, 01 Dec 2026 11:00:00 GMT"}, 0.0, id="a date in the past: now"),
    pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="milliseconds win"),
    pytest.param({"retry-after": "soon"}, None, id="unreadable: our own back-off"),
    pytest.param({}, None, id="not said"),
])
def test_retry_after(headers, seconds):
    assert retry_after(headers, NOW) == seconds


POLICY = RetryPolicy(max_elapsed_seconds=60, initial_backoff_seconds=1, max_backoff_seconds=8)
RATE = LLMError("RateLimitError: slow down", retryable=True, reason="RateLimited")


def test_backoff_doubles_with_equal_jitter_up_to_the_cap():
    retry, waits = None, []
    for _ in range(6):
        retry = next_retry(POLICY, retry, RATE, NOW, jitter=lambda: 1.0)
        waits.append(wait_left(retry, NOW))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] and retry.attempts == 6
    assert wait_left(next_retry(POLICY, None, RATE, NOW, jitter=lambda: 0.0), NOW) == 0.5  # never near zero
    assert retry.since == "2026-12-01T12:00:00.000Z" and retry.reason == "RateLimited"


def test_retry_after_is_honoured_and_the_policy_runs_out():
    told = LLMError("503", retryable=True, reason="ServerError", retry_after=30)
    retry = next_retry(POLICY, None, told, NOW)
    assert wait_left(retry, NOW) == 30.0 and wait_left(retry, NOW + timedelta(seconds=40)) == 0.0
    late = NOW + timedelta(seconds=45)
    assert next_retry(POLICY, retry, told, late) is None  # 45 s + 30 s > maxElapsedSeconds 60
    assert "gave up after 2 attempts over 45 s" in gave_up(retry, told, late)
    assert next_retry(POLICY, None, LLMError("401", reason="Unauthorized"), NOW) is None
    assert next_retry(RetryPolicy(max_elapsed_seconds=0), None, RATE, NOW) is None


class Failing(ScriptedLLM):
    """Fails the first `n` requests with `error`, then answers."""

    def __init__(self, n: int, error: LLMError, *replies):
        super().__init__(*replies)
        self.failures, self.error = n, error

    async def complete(self, messages, tools):
        if self.failures:
            self.failures -= 1
            self.calls.append((messages, tools))
            raise self.error
        return await super().complete(messages, tools)


def run(llm, store, retry: RetryPolicy = POLICY, status: TaskRunStatus | None = None) -> TaskRunStatus:
    spec = SPEC.model_copy(update={"llm": SPEC.llm.model_copy(update={"retry": retry})})
    status = status or enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW).model_copy(
        update={"actor": ActorRef(name="a1", namespace="kc")})
    return asyncio.run(AgentLoop(spec, llm, CountingExecutor(), store).run(status))


def test_a_short_episode_is_ridden_out_in_the_actor_and_checkpointed():
    store = MemoryStore()
    quick = LLMError("RateLimitError", retryable=True, reason="RateLimited", retry_after=0.01)
    final = run(Failing(2, quick, assistant("done")), store)
    assert final.phase is Phase.COMPLETED and final.llm_retry is None
    episodes = [s.llm_retry.attempts for s in store.saved if s.llm_retry]
    assert episodes == [1, 2] and "attempt 2" in [s.message for s in store.saved if s.llm_retry][-1]
    assert final.step == 1  # the failed attempts are not steps


def test_a_long_backoff_releases_the_actor_with_the_run_still_running():
    store = MemoryStore()
    long = LLMError("ServiceUnavailable", retryable=True, reason="ServerError", retry_after=HOLD_SECONDS + 60)
    patient = RetryPolicy(max_elapsed_seconds=3600)
    released = run(Failing(1, long, assistant("done")), store, patient)
    assert released.phase is Phase.RUNNING and released.llm_retry.attempts == 1
    assert store.saved[-1].actor is None  # the checkpoint says no actor holds the run while it waits
    assert wait_left(released.llm_retry, datetime.now(timezone.utc)) > HOLD_SECONDS
    # a fresh actor at retryAt (here: the deadline moved into the past) asks again and goes on
    due = released.model_copy(update={"llm_retry": released.llm_retry.model_copy(update={
        "retry_at": "2020-01-01T00:00:00.000Z"})})
    final = run(ScriptedLLM(assistant("done")), store, patient, status=due)
    assert final.phase is Phase.COMPLETED and final.llm_retry is None and store.saved[-1].llm_retry is None


@pytest.mark.parametrize("error, reason", [
    pytest.param(LLMError("AuthenticationError: Error code: 401", reason="Unauthorized"), "Unauthorized", id="401"),
    pytest.param(LLMError("NotFoundError: model", reason="ModelNotFound"), "ModelNotFound", id="404"),
])
def test_final_errors_fail_at_once_with_their_reason(error, reason):
    store = MemoryStore()
    final = run(Failing(1, error, assistant("never")), store)
    assert final.phase is Phase.FAILED and final.phase_history[-1].reason == reason
    assert final.error == str(error) and store.events == [(reason, True)]


def test_an_episode_past_the_policy_fails_with_the_attempts():
    store = MemoryStore()
    error = LLMError("InternalServerError", retryable=True, reason="ServerError", retry_after=0.01)
    earlier = LLMRetry(attempts=3, since="2020-01-01T00:00:00.000Z", retry_at="2020-01-01T00:00:00.000Z",
                       reason="ServerError", last_error="InternalServerError")
    status = enter(TaskRunStatus(), Phase.RUNNING, "x", now=NOW).model_copy(update={"llm_retry": earlier})
    final = run(Failing(1, error, assistant("never")), store, status=status)
    assert final.phase is Phase.FAILED and final.phase_history[-1].reason == "LLMError"
    assert "gave up after 4 attempts" in final.error and final.llm_retry is None


# --- parameters as providers take them, and cut-off replies ------------------------------------------------------
def test_only_what_is_set_is_sent_and_extra_fields_never_replace_the_runs_own():
    from actors.llm import request_body
    from kubechain.api.v1alpha1 import LLMSpec

    plain = request_body(LLMSpec(model="o9"), [{"role": "user", "content": "hi"}], [])
    assert plain == {"model": "o9", "messages": [{"role": "user", "content": "hi"}]}  # no temperature, no max_tokens
    spec = LLMSpec(model="o9", max_completion_tokens=500, extra_body={"reasoning_effort": "low", "seed": 7})
    body = request_body(spec, [], [{"type": "function"}])
    assert body == {"reasoning_effort": "low", "seed": 7, "model": "o9", "messages": [],
                    "max_completion_tokens": 500, "tools": [{"type": "function"}]}
    with pytest.raises(ValueError, match="extraBody cannot set messages, model"):
        LLMSpec(model="o9", extra_body={"model": "other", "messages": []})


def test_a_cut_off_answer_fails_the_run_and_a_cut_off_call_is_a_tool_error():
    from actors.llm import LLMReply
    from kubechain.api.v1alpha1 import Usage

    from .test_loop import call

    cut = LLMReply(assistant("The answer is 4").message, Usage(), finish_reason="length")
    store = MemoryStore()
    final = run(ScriptedLLM(cut), store)
    assert final.phase is Phase.FAILED and final.phase_history[-1].reason == "OutputTruncated"
    assert "maxCompletionTokens" in final.error and final.output is None

    calls = LLMReply(assistant(calls=[call("c1", "calculator", '{"expression": "1+1"}'),
                                      call("c2", "calculator", '{"expression": "2*')]).message, Usage(),
                     finish_reason="length")
    final = run(ScriptedLLM(calls, assistant("done")), MemoryStore())
    [whole, broken] = final.tool_call_history
    assert (whole.state.value, broken.state.value) == ("Succeeded", "Failed") and "cut off" in broken.error
    assert final.phase is Phase.COMPLETED
