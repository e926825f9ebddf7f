"""Runs ride out what a model provider does to them: rate limits, outages, and the errors retrying cannot mend."""
from __future__ import annotations

import pytest

from .chaos import actors, kill_actor, wait_until
from .conftest import LLM_KEY, agent, llm, secret, task

pytestmark = pytest.mark.integration
FAST = {"initialBackoffSeconds": 0.2, "maxBackoffSeconds": 1}
# A run's first actor can wait for the operator's Ray Client connection: on this machine Ray's proxier sometimes
# fails to start a client's server and the client gives up only after ~100 s (see test_standby).
FIRST_ACTOR_SECONDS = 180


def setup(kube, stack, steps: list[dict], model: str | None = None, **retry) -> str:
    model = model or f"{kube.namespace}-model"
    stack.llm.set_script(model, steps)
    kube.apply([secret(), llm("model", stack.llm.base_url, model, retry={**FAST, **retry}), agent("plain", "model")])
    kube.wait_ready("agent", "plain")
    return model


def statuses(stack, model: str) -> list[int]:
    return [r["status"] for r in stack.llm.requests() if r["model"] == model]


def test_rate_limits_with_retry_after_in_seconds_and_as_a_date_are_ridden_out(kube, stack):
    model = setup(kube, stack, [{"content": "done", "error": {"status": 429, "times": 2, "retry_after": 1}}])
    kube.apply([task("limited", "plain", "hello")])
    backing_off = kube.wait_for("taskrun", "limited-run", lambda o: (o.get("status") or {}).get("llmRetry"),
                                FIRST_ACTOR_SECONDS, "backing off")["status"]
    assert backing_off["phase"] == "Running" and backing_off["llmRetry"]["reason"] == "RateLimited"
    assert "retrying at" in backing_off["message"]
    done = kube.wait_ended("limited-run", "Completed", timeout=60)["status"]
    assert statuses(stack, model) == [429, 429, 200]  # each attempt asked once, nothing repeated after the answer
    assert "llmRetry" not in done and [t["reason"] for t in done["phaseHistory"]] == ["Scheduled", "FinalAnswer"]
    llm_available = next(c for c in done["conditions"] if c["type"] == "LLMAvailable")
    assert (llm_available["status"], llm_available["reason"]) == ("True", "Answering")
    reasons = [e["reason"] for e in kube.events("limited-run")]
    assert reasons.count("RateLimited") == 1 and "LLMRecovered" in reasons  # one Event per episode

    dated = f"{model}-dated"
    stack.llm.set_script(dated, [{"content": "ok", "error": {"status": 429, "times": 1, "retry_after_date": 2}}])
    kube.run("patch", "llm", "model", "--type", "merge", "-p", f'{{"spec": {{"model": "{dated}"}}}}')
    kube.apply([task("dated", "plain", "hello again")])
    kube.wait_phase("dated-run", "Completed", timeout=60)
    asked = [r["received_at"] for r in stack.llm.requests() if r["model"] == dated]
    assert len(asked) == 2 and asked[1] - asked[0] >= 1.0  # the date was honoured (1 s of it lost to rounding)


def test_an_outage_longer_than_an_actor_waits_holds_no_process_and_survives_an_operator_restart(kube, stack):
    model = setup(kube, stack, [{"content": "survived", "error": {"status": 503, "times": 2, "retry_after": 8}}])
    kube.apply([task("outage", "plain", "hello")])
    run = kube.wait_for("taskrun", "outage-run", lambda o: (o.get("status") or {}).get("llmRetry"),
                        FIRST_ACTOR_SECONDS, "backing off")
    prefix = f"{kube.namespace}/outage-run/"
    wait_until(lambda: not [a for a in actors(stack) if a["state"] == "ALIVE" and a.get("name", "").startswith(prefix)],
               timeout=6, what="no actor while the run backs off")
    assert kube.get("taskrun", "outage-run")["status"]["phase"] == "Running"
    restarts = stack.operator.restarts
    stack.operator.kill()  # the retry time lives in the status: a new operator waits for it too
    stack.operator.wait_restarted(restarts + 1)
    done = kube.wait_phase("outage-run", "Completed", timeout=FIRST_ACTOR_SECONDS + 60)["status"]
    assert done["output"] == "survived" and statuses(stack, model) == [503, 503, 200]
    assert run["status"]["llmRetry"]["reason"] == "ServerError"
    reasons = [e["reason"] for e in kube.events("outage-run")]
    assert "ActorResumed" in reasons and "ActorRestarted" not in reasons  # a back-off is not a crash


def test_an_actor_killed_during_a_short_backoff_waits_out_the_same_deadline(kube, stack):
    model = setup(kube, stack, [{"content": "ok", "error": {"status": 429, "times": 1, "retry_after": 4}}])
    kube.apply([task("killed", "plain", "hello")])
    run = kube.wait_for("taskrun", "killed-run", lambda o: (o.get("status") or {}).get("llmRetry"),
                        FIRST_ACTOR_SECONDS, "backing off")
    kill_actor(stack, run["status"]["actor"]["name"])  # it sleeps through a wait this short, holding the run
    done = kube.wait_phase("killed-run", "Completed", timeout=60)["status"]
    asked = [r for r in stack.llm.requests() if r["model"] == model]
    assert [r["status"] for r in asked] == [429, 200] and asked[1]["received_at"] - asked[0]["received_at"] >= 3.5
    assert done["epoch"] == 2  # a fresh actor restored the run and asked once, at the retry time


# The LLM's own check turns a wrong key or model into Ready=False before any run (test_readiness): these are a key
# revoked, or a model withdrawn, after the LLM was verified, as the provider's chat endpoint then answers.
@pytest.mark.parametrize("case, error, reason", [
    pytest.param("key", {"status": 401, "times": 100, "code": "invalid_api_key",
                         "message": "Incorrect API key provided."}, "Unauthorized", id="a revoked key"),
    pytest.param("model", {"status": 404, "times": 100, "code": "model_not_found",
                           "message": "The model `nope` does not exist."}, "ModelNotFound", id="a withdrawn model"),
])
def test_errors_retrying_cannot_mend_fail_the_run_at_once(kube, stack, case, error, reason):
    model = setup(kube, stack, [{"content": "never", "error": error}], model=f"{kube.namespace}-{case}")
    kube.apply([task("refused", "plain", "hello")])
    failed = kube.wait_phase("refused-run", "Failed", timeout=FIRST_ACTOR_SECONDS)["status"]
    assert failed["phaseHistory"][-1]["reason"] == reason and len(statuses(stack, model)) == 1
    assert error["message"] in failed["error"] and LLM_KEY not in str(failed) and "llmRetry" not in failed


def test_an_outage_past_the_policy_fails_with_the_attempts(kube, stack):
    model = setup(kube, stack, [{"content": "never", "error": {"status": 500, "times": 1000}}], maxElapsedSeconds=2)
    kube.apply([task("doomed", "plain", "hello")])
    failed = kube.wait_phase("doomed-run", "Failed", timeout=30)["status"]
    assert failed["phaseHistory"][-1]["reason"] == "LLMError" and failed["error"].startswith("InternalServerError")
    assert "gave up after" in failed["error"] and len(statuses(stack, model)) >= 3
    assert any(e["reason"] == "LLMError" and e["type"] == "Warning" for e in kube.events("doomed-run"))


def test_a_reasoning_model_gets_only_the_parameters_it_takes(kube, stack):
    model = f"{kube.namespace}-reasoning"
    stack.llm.set_script(model, [{"content": "thought it through", "refuse": ["max_tokens", "temperature"]}])
    kube.apply([secret(), llm("model", stack.llm.base_url, model, maxCompletionTokens=300,
                              extraBody={"reasoning_effort": "low"}), agent("plain", "model")])
    kube.wait_ready("agent", "plain")
    kube.apply([task("think", "plain", "hello")])
    assert kube.wait_phase("think-run", "Completed", timeout=FIRST_ACTOR_SECONDS)["status"]["output"] == "thought it through"
    [sent] = [r["params"] for r in stack.llm.requests() if r["model"] == model]
    streaming = {"stream": True, "stream_options": {"include_usage": True}}  # the actor streams its requests
    assert sent == {"max_completion_tokens": 300, "reasoning_effort": "low", **streaming}  # no temperature, max_tokens

    kube.run("patch", "llm.v1alpha1.kubechain.dev", "model", "--type", "merge", "-p", '{"spec": {"maxTokens": 100}}')
    # once the LLM's status is of the new generation, the operator's index has the new spec too
    kube.wait_for("llm.v1alpha1.kubechain.dev", "model", lambda o: (o.get("status") or {}).get("observedGeneration")
                  == o["metadata"]["generation"], 30, "reconciled")
    kube.apply([task("old-style", "plain", "hello")])
    failed = kube.wait_phase("old-style-run", "Failed", timeout=60)["status"]
    assert failed["phaseHistory"][-1]["reason"] == "LLMRejected" and "'max_tokens' is not supported" in failed["error"]
    refused = kube.apply([llm("bad", stack.llm.base_url, model, extraBody={"model": "other"})], check=False)
    assert refused.returncode != 0 and "extraBody cannot set model" in refused.stderr


def test_a_cut_off_answer_is_not_taken_for_the_answer(kube, stack):
    setup(kube, stack, [{"content": "The answer is 4", "finish_reason": "length"}])
    kube.apply([task("cut", "plain", "2+2?")])
    failed = kube.wait_phase("cut-run", "Failed", timeout=FIRST_ACTOR_SECONDS)["status"]
    assert failed["phaseHistory"][-1]["reason"] == "OutputTruncated" and "output" not in failed
