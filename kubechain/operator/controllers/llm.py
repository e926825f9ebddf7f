"""LLM: ready when its spec is valid and its API key Secret holds the key."""
from __future__ import annotations

from typing import Any

import kopf

from kubechain.operator.observed import observed
from kubechain.api.v1alpha1 import GROUP, VERSION, LLMSpec, ReadinessReason
from kubechain.operator.kube import Kube
from kubechain.core.resolve import Readiness, not_ready, parse
from kubechain.operator.settings import current

from .catalog import IndexCatalog
from .readiness import reevaluate_dependents, write_readiness

RECHECK_SECONDS = current().reconcile.pending_retry_seconds * 3


async def llm_readiness(kube: Kube, namespace: str, raw_spec: dict[str, Any]) -> Readiness:
    spec, error = parse(LLMSpec, raw_spec)
    if error:
        return not_ready(ReadinessReason.INVALID_SPEC, error)
    if spec.api_key_secret_ref:
        ref = spec.api_key_secret_ref
        secret = await kube.secret_value(namespace, ref.name, ref.key)
        if secret.problem:
            return not_ready(ReadinessReason.SECRET_NOT_FOUND, secret.problem)
    return Readiness(True, ReadinessReason.READY, f"{spec.provider} model {spec.model!r}")


@kopf.on.resume(GROUP, VERSION, "llms")
@kopf.on.create(GROUP, VERSION, "llms")
@kopf.on.update(GROUP, VERSION, "llms")
# Secrets are not watched (that would need cluster-wide Secret access): a timer notices a key that appears,
# disappears or is rotated.
@kopf.timer(GROUP, VERSION, "llms", id="recheck", interval=RECHECK_SECONDS, initial_delay=RECHECK_SECONDS)
@observed("LLM")
async def reconcile(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta,
                    memo: kopf.Memo, **_: Any) -> None:
    readiness = await llm_readiness(memo.state.kube, namespace, dict(spec))
    await write_readiness(memo.state.kube, "LLM", namespace, name, uid, meta.get("generation"), dict(status), readiness)


@kopf.on.event(GROUP, VERSION, "llms")
@observed("LLM")
async def notify_agents(namespace: str, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    await reevaluate_dependents(memo.state.kube, IndexCatalog(kwargs), "Agent", namespace,
                                depends_on=lambda agent: (agent.get("llmRef") or {}).get("name") == name)
