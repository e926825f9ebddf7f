"""LLM: ready when its spec is valid, its API key Secret holds the key and the provider accepts the key and knows
the model (kubechain/core/llmcheck.py reads its answers; kubechain/operator/llmcheck.py asks).

Checked when the LLM is created, changed or resumed, when its key's Secret changes (Secrets LLMs reference are
watched), and on the recheck timer: every `llm_check_seconds` after a verdict, sooner while the provider does not
answer. Agents follow the LLM's readiness (notify_agents), so a new run waits in Pending while its LLM is not ready.
A running run keeps its actor (a key revoked under it fails it with the provider's reason); one that needs a new
actor (after a crash, a long back-off, an answer) waits for the LLM, still Running (taskrun/effects.py)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from kubechain.operator.observed import observed
from kubechain.api.v1alpha1 import GROUP, VERSION, LLMSpec, ReadinessReason
from kubechain.operator.kube import Kube
from kubechain.operator.llmcheck import ask
from kubechain.operator.state import OperatorState
from kubechain.core import llmcheck
from kubechain.core.resolve import Readiness, not_ready, parse
from kubechain.operator.settings import current

from .catalog import IndexCatalog
from .readiness import reevaluate_dependents, write_readiness

RECHECK_SECONDS = current().reconcile.pending_retry_seconds * 3  # the timer's tick; the first retry of Unreachable


async def llm_readiness(kube: Kube, namespace: str, raw_spec: dict[str, Any]) -> Readiness:
    spec, error = parse(LLMSpec, raw_spec)
    if error:
        return not_ready(ReadinessReason.INVALID_SPEC, error)
    key = None
    if spec.api_key_secret_ref:
        ref = spec.api_key_secret_ref
        secret = await kube.secret_value(namespace, ref.name, ref.key)
        if secret.problem:
            return not_ready(ReadinessReason.SECRET_NOT_FOUND, secret.problem)
        key = secret.value
    retrieved, listed = await ask(spec, key)
    return llmcheck.readiness(spec, retrieved, listed, key)


async def check(state: OperatorState, namespace: str, name: str) -> None:
    """Check the LLM as it is now and write its readiness; checks of one LLM take turns."""
    key = (namespace, name)
    async with state.llm_checks.lock(key):
        llm = await state.kube.get("llms", namespace, name)  # what a check that waited its turn must judge
        if llm is None:
            return
        readiness = await llm_readiness(state.kube, namespace, llm.get("spec") or {})
        checks = state.llm_checks
        checks.verdicts[key] = llmcheck.verdict(checks.verdicts.get(key), readiness.reason, time.monotonic())
        meta = llm["metadata"]
        await write_readiness(state.kube, "LLM", namespace, name, meta["uid"], meta.get("generation"),
                              llm.get("status") or {}, readiness)


@kopf.on.resume(GROUP, VERSION, "llms")
@kopf.on.create(GROUP, VERSION, "llms")
@kopf.on.update(GROUP, VERSION, "llms")
@observed("LLM")
async def reconcile(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await check(memo.state, namespace, name)


@kopf.timer(GROUP, VERSION, "llms", id="recheck", interval=RECHECK_SECONDS, initial_delay=RECHECK_SECONDS)
@observed("LLM")
async def recheck(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    last = state.llm_checks.verdicts.get((namespace, name))
    if llmcheck.due(last, time.monotonic(), state.settings.reconcile.llm_check_seconds, RECHECK_SECONDS):
        await check(state, namespace, name)


@kopf.index(GROUP, VERSION, "llms")
def llms_by_secret(namespace: str, name: str, spec: kopf.Spec, **_: Any):
    """LLMs by (namespace, Secret) of their API key: the Secrets to watch, and whom a change concerns."""
    secret = (spec.get("apiKeySecretRef") or {}).get("name")
    return {(namespace, secret): name} if secret else None


def _a_key(namespace: str, name: str, llms_by_secret: kopf.Index, **_: Any) -> bool:
    return (namespace, name) in llms_by_secret


@kopf.on.event("", "v1", "secrets", when=_a_key)
@observed("Secret")
async def key_changed(type: str | None, namespace: str, name: str, meta: kopf.Meta, memo: kopf.Memo,
                      llms_by_secret: kopf.Index, **_: Any) -> None:
    """A key Secret was created, changed or deleted: its LLMs are checked now, not at their next recheck."""
    state: OperatorState = memo.state
    versions, secret = state.llm_checks.secret_versions, (namespace, name)
    changed = llmcheck.secret_changed(type, versions.get(secret), meta.get("resourceVersion"))
    if type == "DELETED":
        versions.pop(secret, None)
    else:
        versions[secret] = meta.get("resourceVersion")
    if changed:
        await asyncio.gather(*(check(state, namespace, llm) for llm in set(llms_by_secret.get(secret, []))))


@kopf.on.event(GROUP, VERSION, "llms")
@observed("LLM")
async def notify_agents(type: str | None, namespace: str, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    if type == "DELETED":
        memo.state.llm_checks.forget((namespace, name))
    await reevaluate_dependents(memo.state.kube, IndexCatalog(kwargs), "Agent", namespace,
                                depends_on=lambda agent: (agent.get("llmRef") or {}).get("name") == name)
