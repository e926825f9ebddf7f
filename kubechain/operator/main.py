"""The kopf operator: its start-up, and the import of every controller (importing one registers its handlers).
`kubechain operator` runs it while holding the Lease (kubechain/operator/replica.py); `kopf run -m
kubechain.operator.main` runs it alone. The webhooks are their own process (kubechain/operator/admission/)."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP
from kubechain.core.naming import FINALIZER
from kubechain.runtime import tracing

from . import contextstore, metrics
from .controllers import agent, catalog, llm, quota, schedule, task, taskrun, tool, toolset  # noqa: F401
from .credentials import ActorCredentials
from .kube import EXECUTOR_THREADS, Kube
from .raygateway import RayGateway
from .settings import Settings, current
from .state import OperatorState

log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations under our own prefix, and status for our fields only.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER  # the TaskRuns the operator creates carry it already (naming.py)
    settings.posting.level = logging.WARNING  # Events are posted deliberately (kopf.info/kopf.event), not per log line
    settings.batching.batch_window = 0.01  # react to a watch event within ~10 ms, not kopf's default 100 ms
    # The Kubernetes and Ray clients block: their calls run in the loop's default executor, and a burst keeps
    # hundreds in flight (asyncio's default of cpu+4 threads made a 2-core operator start ~1 run per second).
    executor = ThreadPoolExecutor(max_workers=EXECUTOR_THREADS, thread_name_prefix="io")
    asyncio.get_running_loop().set_default_executor(executor)
    config = current()
    tracing.configure("kubechain-operator")
    metrics.serve(config.metrics_port)
    if getattr(memo, "state", None) is None:  # `kopf run -m kubechain.operator.main`; a replica builds it earlier
        memo.state = build_state(config)
    state = memo.state
    # Connect in the background: a slow Ray (Ray Client starts a server per connection) must not hold up the
    # operator's start; the TaskRun supervisors wait for the same connection (the gateway locks) or retry it.
    # A replica connected while standing by: this only takes over the standby pool.
    state.ray_connecting = asyncio.create_task(connect_ray(state.ray, config.ray.address))
    # Rows of runs deleted while no operator ran (the leader only: this runs once it holds the Lease).
    state.in_background(contextstore.sweep_soon(state.kube, config.storage))


def build_state(config: Settings) -> OperatorState:
    kube = Kube()
    return OperatorState(settings=config, kube=kube, ray=RayGateway(config.ray),
                         credentials=ActorCredentials(kube, config.ray.actor_token_seconds))


async def warm_up_ray(state: OperatorState) -> None:
    """A standby replica's connection to Ray, made while it waits for the Lease (the pool stays the leader's)."""
    await connect_ray(state.ray, state.settings.ray.address, pool=False)


async def connect_ray(ray: RayGateway, address: str, pool: bool = True) -> None:
    """Until the first connection is made (then the TaskRun supervisors keep it up): a failed attempt is tried
    again, backing off to 30 s, so a Ray that answers late (or a Ray Client server that failed to start) does not
    leave the operator unconnected until a run happens to need it. The operator serves the other kinds meanwhile.
    `pool`: also adopt and fill the standby actors (the leader's alone)."""
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(ray.connect, pool)
            return
        except Exception as exc:
            log.warning("Ray is not reachable at %s yet: %s; trying again in %.0f s", address, exc, delay)
        await asyncio.sleep(delay)
        delay = min(30.0, delay * 2)


@kopf.on.cleanup()
async def flush_telemetry(**_: Any) -> None:
    tracing.flush()
