"""What a provider's answers say about an LLM's key and model, and when to ask again: pure functions (the asking
is kubechain/operator/llmcheck.py).

The check asks `GET {baseURL}/models/{model}` (OpenAI's retrieve model: free, needs the key, names the model).
Not every OpenAI-compatible server has that endpoint (vLLM only lists), so its answer reads:

1. 200 (with a model in it): the key works and the model is served -> Ready, verified.
2. 401/403: the key is refused -> Unauthorized, with the provider's message (the key masked out, should it quote it).
3. 404 with OpenAI's code `model_not_found` -> ModelNotFound.
4. No answer (connection, timeout), 5xx, 408, 409, 429 -> Unreachable: not a verdict, asked again soon.
5. Another 404, a 405 or a 501: the endpoint may be missing, so the listing `GET {baseURL}/models` decides: it has
   the model -> Ready, verified; it lacks it -> ModelNotFound; it is missing too (404/405/501) -> Ready, "could not
   be verified"; 401/403, no answer, 5xx: as in 2 and 4.
6. Anything else (400, 422...) -> Ready, "could not be verified", with what the server said: an oddity of a server
   should not stop runs (they report their own errors precisely).
"""
from __future__ import annotations

from dataclasses import dataclass

from kubechain.api.v1alpha1 import LLMSpec, ReadinessReason
from kubechain.core.resolve import Readiness, not_ready

MISSING = frozenset({404, 405, 501})  # what a server without the endpoint answers
MESSAGE_CHARS = 500
RETRY_DOUBLINGS = 2  # an unreachable provider is asked again after retry, 2 x retry, then every 4 x retry


@dataclass(frozen=True)
class Answer:
    """The provider's answer to one request of the check."""

    status: int | None  # HTTP status; None: no answer (no connection, timeout)
    message: str = ""  # the provider's error message, or what went wrong on the way
    code: str | None = None  # OpenAI's error code, e.g. model_not_found
    models: tuple[str, ...] | None = None  # a listing's model ids (None: not a listing, or unreadable)
    readable: bool = True  # False: a 200 that is not what the endpoint returns (e.g. a web page)


def needs_listing(retrieved: Answer) -> bool:
    """The retrieve endpoint may be missing: whether the model exists is for the listing to say (rule 5)."""
    return retrieved.status in MISSING and retrieved.code != "model_not_found"


def masked(text: str, key: str | None) -> str:
    """The message without the key (a provider may quote it back), cut to a status-sized length."""
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text[:MESSAGE_CHARS]


def readiness(spec: LLMSpec, retrieved: Answer, listed: Answer | None = None, key: str | None = None) -> Readiness:
    """The LLM's readiness from the answers to `GET /models/{model}` and, if it was needed, `GET /models`."""
    what = f"{spec.provider} model {spec.model!r}"
    if problem := _problem(spec, retrieved, key):
        return problem
    if retrieved.status == 200 and retrieved.readable:
        return Readiness(True, ReadinessReason.READY, f"{what} verified")
    if retrieved.status == 404 and retrieved.code == "model_not_found":
        return not_ready(ReadinessReason.MODEL_NOT_FOUND, f"model {spec.model!r} not found: "
                                                          f"{masked(retrieved.message, key)}")
    if not needs_listing(retrieved):
        return _unverified(what, f"GET /models/{spec.model} answered {retrieved.status}: "
                                 f"{masked(retrieved.message, key)}")
    if listed is None:
        raise ValueError("a listing is needed to read this answer")
    if problem := _problem(spec, listed, key):
        return problem
    if listed.status in MISSING:
        return _unverified(what, "the server does not list its models")
    if listed.status != 200 or listed.models is None:
        return _unverified(what, f"GET /models answered {listed.status}: {masked(listed.message, key)}")
    if spec.model in listed.models:
        return Readiness(True, ReadinessReason.READY, f"{what} verified (listed by the server)")
    return not_ready(ReadinessReason.MODEL_NOT_FOUND, f"model {spec.model!r} is not among the "
                                                      f"{len(listed.models)} models the server lists")


def _problem(spec: LLMSpec, answer: Answer, key: str | None) -> Readiness | None:
    """Rules 2 and 4, the same for either request."""
    where = spec.base_url or "api.openai.com"
    if answer.status is None:
        return not_ready(ReadinessReason.UNREACHABLE, f"no answer from {where}: {masked(answer.message, key)}")
    if answer.status in (408, 409, 429) or (answer.status >= 500 and answer.status != 501):
        return not_ready(ReadinessReason.UNREACHABLE, f"{where} answered {answer.status}: "
                                                      f"{masked(answer.message, key)}")
    if answer.status in (401, 403):
        return not_ready(ReadinessReason.UNAUTHORIZED, f"the provider refused the API key: "
                                                       f"{masked(answer.message, key)}")
    return None


def _unverified(what: str, why: str) -> Readiness:
    return Readiness(True, ReadinessReason.READY, f"{what} could not be verified ({why})")


@dataclass(frozen=True)
class Verdict:
    """The last check of an LLM, in this operator process."""

    at: float  # monotonic seconds
    reason: ReadinessReason
    failures: int = 0  # checks in a row the provider did not answer


def verdict(previous: Verdict | None, reason: ReadinessReason, now: float) -> Verdict:
    failures = (previous.failures if previous else 0) + 1 if reason.retried else 0
    return Verdict(now, reason, failures)


def due(last: Verdict | None, now: float, every: float, retry: float) -> bool:
    """Whether the recheck timer checks the LLM now: never checked here; a missing Secret at every tick (the provider
    is not asked for it); a provider that did not answer after `retry` seconds, doubling with each failure up to
    RETRY_DOUBLINGS times (runs wait for their LLM: a back-off as long as `every` would hold them minutes after the
    provider came back); any other verdict after `every` seconds (its changes are events: the LLM's, its Secret's)."""
    if last is None or last.reason is ReadinessReason.SECRET_NOT_FOUND:
        return True
    if last.reason.retried:
        return now - last.at >= min(every, retry * 2 ** min(last.failures - 1, RETRY_DOUBLINGS))
    return now - last.at >= every


def secret_changed(event: str | None, seen: str | None, version: str | None) -> bool:
    """Whether an event of an LLM's key Secret calls for a check. A listing's (event None: the operator started or
    its watch was restarted) only when the Secret changed since this process last saw it: at start-up the LLMs'
    own handlers check them, and a restarted watch lists every Secret again unchanged."""
    if event is not None:
        return True
    return seen is not None and seen != version
