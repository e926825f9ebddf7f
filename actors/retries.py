"""The run's own retries of failed LLM requests (LLM.spec.retry), as pure functions of the episode so far.

An episode starts with a retryable failure (429, 408, 409, 5xx, no answer) and ends with the next answer. Its
state is `status.llmRetry` (checkpointed like every step), so a crash of the actor or the operator in the middle
of a back-off changes nothing: whoever looks next waits until `retryAt`. A wait longer than HOLD_SECONDS holds
no actor process: the actor returns with the run still Running, and the operator starts a fresh actor at
`retryAt` (kubechain/core/reconciler.py, "running, backing off").
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Callable

from kubechain.api.v1alpha1 import LLMRetry, RetryPolicy
from kubechain.api.v1alpha1.common import parse_rfc3339, rfc3339

from .llm import LLMError

HOLD_SECONDS = 5.0  # the longest back-off an actor sleeps through; a longer one releases its process


def next_retry(policy: RetryPolicy, previous: LLMRetry | None, error: LLMError, now: datetime,
               jitter: Callable[[], float] = random.random) -> LLMRetry | None:
    """The episode once `error` happened at `now`, or None: the error is final, or the policy has run out.
    The wait is the provider's Retry-After if it gave one, else exponential back-off with "equal jitter"
    (half fixed, half random: spread out, never near zero)."""
    if not error.retryable:
        return None
    attempts = (previous.attempts if previous else 0) + 1
    since = parse_rfc3339(previous.since) if previous else now
    backoff = min(policy.max_backoff_seconds, policy.initial_backoff_seconds * 2 ** (attempts - 1))
    delay = error.retry_after if error.retry_after is not None else backoff * (0.5 + jitter() / 2)
    if (now - since).total_seconds() + delay > policy.max_elapsed_seconds:
        return None
    return LLMRetry(attempts=attempts, since=rfc3339(since), retry_at=rfc3339(now + timedelta(seconds=delay)),
                    reason=error.reason, last_error=str(error)[:1000])


def wait_left(retry: LLMRetry | None, now: datetime) -> float:
    """Seconds until the episode's next attempt is due (0: now)."""
    return max(0.0, (parse_rfc3339(retry.retry_at) - now).total_seconds()) if retry else 0.0


def gave_up(previous: LLMRetry | None, error: LLMError, now: datetime) -> str:
    """Why the run fails: the provider's error, and for a retried episode how long it was ridden out."""
    if previous is None or not error.retryable:
        return str(error)
    elapsed = (now - parse_rfc3339(previous.since)).total_seconds()
    return (f"{error} (gave up after {previous.attempts + 1} attempts over {elapsed:.0f} s: "
            f"LLM.spec.retry.maxElapsedSeconds)")
