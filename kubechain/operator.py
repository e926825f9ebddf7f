"""The kopf operator: `kopf run -m kubechain.operator` (or `kubechain operator`)."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP
from kubechain.controllers import (agent, catalog, llm, task, taskrun, taskrun_queue, taskrun_waits, tooljobs,  # noqa: F401
                                   tool, toolset, webhooks)  # (importing them registers their handlers)
from kubechain.kube import Kube
from kubechain.observability import metrics, tracing
from kubechain.raygateway import RayGateway
from kubechain.settings import Settings, WebhookSettings
from kubechain.webhook_server import WebhookServer, ensure_certificates

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
    memo.settings = Settings()
    memo.locks = {}  # TaskRun uid -> asyncio.Lock
    memo.scheduled = {}  # TaskRun uid -> namespace, moved to Running by this process, not yet seen Running
    memo.admission_lock = asyncio.Lock()  # one admission decision at a time
    memo.background = set()  # tasks that outlive the handler that started them (kept from garbage collection)
    memo.last_plan = {}  # "at" (monotonic time) and "plan": the last admission plan, see taskrun_queue.admission
    memo.woken = {}  # (namespace, TaskRun) -> monotonic time an admitted run was last woken
    memo.task_phases = {}  # (namespace, Task) -> the TaskRun phase last shown in the Task's status
    memo.phases = {}  # TaskRun uid -> (length of phaseHistory, phase) last seen (metrics, Succeeded, freed slots)
    tracing.configure("kubechain-operator")
    if memo.settings.webhook.port:
        serve_webhooks(settings, memo.settings.webhook)
    metrics.serve(memo.settings.metrics_port)
    memo.kube = Kube()
    memo.ray = RayGateway(memo.settings.ray)
    # Connect in the background: a slow Ray (Ray Client starts a server per connection) must not hold up the
    # operator's start; the TaskRun supervisors wait for the same connection (the gateway locks) or retry it.
    memo.ray_connecting = asyncio.create_task(connect_ray(memo.ray, memo.settings.ray.address))


async def connect_ray(ray: RayGateway, address: str) -> None:
    try:
        await asyncio.to_thread(ray.connect)
    except Exception as exc:  # TaskRun handlers retry the connection; the operator still serves the other kinds
        log.warning("Ray is not reachable at %s yet: %s", address, exc)


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
