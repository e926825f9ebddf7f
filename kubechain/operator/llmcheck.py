"""Asking an LLM's provider whether its key and model work; what the answers mean is kubechain/core/llmcheck.py.

- When (controllers/llm.py): the LLM is created, changed or resumed; its key's Secret is created, changed or deleted
  (the Secrets LLMs reference are watched); and on the LLM's recheck timer when `core.llmcheck.due`.
- One check in flight per LLM: its checks take turns on a lock, and each reads the LLM fresh when its turn comes,
  so a check that waited never writes a verdict about an older spec or key.
- The requests: `GET /models/{model}` (and `GET /models` when that is missing), a short timeout, no retries by
  the SDK (the timer is the retry).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable

from kubechain.api.v1alpha1 import LLMSpec
from kubechain.core.llmcheck import Answer, Verdict, needs_listing

TIMEOUT_SECONDS = 5.0  # the models endpoints answer at once; a provider slower than this is as good as unreachable


@dataclass
class LLMChecks:
    """This process's bookkeeping of the checks (memo.state.llm_checks); a restarted operator checks every LLM
    on resume. Secrets are known by their resourceVersion only, never their data."""

    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    """(namespace, LLM) -> the lock its checks take turns on."""
    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)
    """(namespace, LLM) -> its last check."""
    secret_versions: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, Secret) -> the resourceVersion of the key Secret last seen."""

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def forget(self, key: tuple[str, str]) -> None:
        self.locks.pop(key, None)
        self.verdicts.pop(key, None)


async def ask(spec: LLMSpec, api_key: str | None) -> tuple[Answer, Answer | None]:
    """The answers to `GET /models/{model}` and, only if needed, `GET /models`."""
    import openai  # heavy (~0.8 s): imported when the first LLM is checked, not at the operator's start

    # Servers without auth (Ollama, vLLM) still need a non-empty key for the SDK.
    client = openai.AsyncOpenAI(base_url=spec.base_url, api_key=api_key or "unused", timeout=TIMEOUT_SECONDS,
                                max_retries=0)
    try:
        retrieved = await _answer(openai, _retrieved(client, spec.model))
        return retrieved, (await _answer(openai, _listed(client)) if needs_listing(retrieved) else None)
    finally:
        await client.close()


async def _retrieved(client: Any, model: str) -> Answer:
    found = await client.models.retrieve(model)
    # A web server that answers 200 to any path is not a provider that knows the model.
    return Answer(200, readable=isinstance(getattr(found, "id", None), str))


async def _listed(client: Any) -> Answer:
    page = await client.models.list()
    return Answer(200, models=tuple(str(model.id) for model in page.data))


async def _answer(openai: Any, request: Awaitable[Answer]) -> Answer:
    try:
        return await request
    except openai.APIStatusError as exc:  # the provider answered with an error
        body = exc.body if isinstance(exc.body, dict) else {}
        return Answer(exc.status_code, str(body.get("message") or exc.body or exc.message), code=exc.code)
    except openai.APIConnectionError as exc:  # no answer (timeouts included): the cause says why
        return Answer(None, f"{exc.message} ({exc.__cause__})" if exc.__cause__ else exc.message)
    except (openai.APIError, ValueError, AttributeError, TypeError) as exc:  # a 200 the SDK cannot read
        return Answer(200, f"{type(exc).__name__}: {exc}", readable=False)
