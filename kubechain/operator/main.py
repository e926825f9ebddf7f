"""The kopf operator: `kopf run -m kubechain.operator.main` (or `kubechain operator`): its start-up, and the
import of every controller (importing one registers its handlers)."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP
from kubechain.runtime import tracing

from . import metrics
from .controllers import agent, catalog, llm, quota, schedule, task, taskrun, tool, toolset, webhooks  # noqa: F401
from .credentials import ActorCredentials
from .kube import Kube
from .raygateway import RayGateway
from .settings import WebhookSettings, current
from .state import OperatorState
from .webhook_server import WebhookServer, ensure_certificates

log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations under our own prefix, and status for our fields only.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING  # Events are posted deliberately (kopf.info/kopf.event), not per log line
    settings.batching.batch_window = 0.01  # react to a watch event within ~10 ms, not kopf's default 100 ms
    # The Kubernetes and Ray clients block: their calls run in the loop's default executor, and a burst keeps
    # hundreds in flight (asyncio's default of cpu+4 threads made a 2-core operator start ~1 run per second).
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="io"))
    config = current()
    tracing.configure("kubechain-operator")
    if config.webhook.port:
        serve_webhooks(settings, config.webhook)
    metrics.serve(config.metrics_port)
    kube = Kube()
    state = memo.state = OperatorState(settings=config, kube=kube, ray=RayGateway(config.ray),
                                       credentials=ActorCredentials(kube, config.ray.actor_token_seconds))
    # Connect in the background: a slow Ray (Ray Client starts a server per connection) must not hold up the
    # operator's start; the TaskRun supervisors wait for the same connection (the gateway locks) or retry it.
    state.ray_connecting = asyncio.create_task(connect_ray(state.ray, config.ray.address))


async def connect_ray(ray: RayGateway, address: str) -> None:
    """Until the first connection is made (then the TaskRun supervisors keep it up): a failed attempt is tried
    again, backing off to 30 s, so a Ray that answers late (or a Ray Client server that failed to start) does not
    leave the operator unconnected until a run happens to need it. The operator serves the other kinds meanwhile."""
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(ray.connect)
            return
        except Exception as exc:
            log.warning("Ray is not reachable at %s yet: %s; trying again in %.0f s", address, exc, delay)
        await asyncio.sleep(delay)
        delay = min(30.0, delay * 2)


@kopf.on.cleanup()
async def flush_telemetry(**_: Any) -> None:
    tracing.flush()


def serve_webhooks(settings: kopf.OperatorSettings, webhook: WebhookSettings) -> None:
    """Admission (kopf) and conversion on one HTTPS port; kopf keeps the webhook configurations current."""
    hosts = [webhook.host, "127.0.0.1", "localhost"]
    if webhook.service:  # the names the apiserver uses for a Service: <name>.<namespace>.svc
        namespace, _, name = webhook.service.partition(":")[0].partition("/")
        hosts = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", *hosts]
    ca, cert, key = ensure_certificates(Path(webhook.cert_dir), hosts)
    settings.admission.server = WebhookServer(addr=webhook.address, port=webhook.port, host=webhook.host,
                                              cafile=ca, certfile=cert, pkeyfile=key, service=webhook.service)
    settings.admission.managed = GROUP
