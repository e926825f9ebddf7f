"""One replica's reconciler, `kubechain operator`: it waits for the Lease, reconciles (kopf) while it holds it, and
stops reconciling at once when it loses it. The webhooks are another process (`kubechain webhooks`, every
replica's, kubechain/operator/admission/): a replica waiting for the Lease serves them all the same, and this
process restarting refuses no request.

1. Start: the liveness endpoint (/healthz on KUBECHAIN_HEALTH_PORT) answers at once, leader or not; the operator's
   state is built and Ray connected (without the standby pool: the leader owns it) while waiting, so a takeover
   skips the Ray Client connection (seconds).
2. Leading: kopf runs, standalone (the Lease, not kopf's peering, decides who reconciles), with that state.
3. Lost (renewals failed for the renew deadline, or another holder): the process exits at once with EXIT_LOST,
   as controller-runtime does, with no graceful shutdown that could still write; the Deployment restarts it as
   a standby. The renew deadline is shorter than the lease duration, so it has stopped before anyone else starts.
4. SIGTERM (a rollout, a drain): kopf stops gracefully, then the Lease is released, so a standby takes over at its
   next try (retry_seconds) instead of a lease duration later.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Collection

import kopf
from aiohttp import web

from . import metrics, streams
from .leader import LeaderElector
from .settings import Settings, current

log = logging.getLogger(__name__)
EXIT_LOST = 3  # a distinct code in the pod's last state: "lost the Lease", not a crash


def main(namespaces: Collection[str] = (), verbose: bool = False) -> int:
    settings = current()
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if settings.json_logs else kopf.LogFormat.FULL)
    from . import main as handlers  # noqa: F401  (importing the controllers registers their kopf handlers)

    return asyncio.run(run(settings, tuple(namespaces)))


async def run(settings: Settings, namespaces: tuple[str, ...]) -> int:
    from .main import build_state, warm_up_ray

    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    memo = kopf.Memo(state=build_state(settings))  # first: it loads the kubeconfig every client uses
    elector = LeaderElector(settings.leader) if settings.leader.lease else None
    if elector is not None:
        elector.on_lost = exit_lost
    health = await serve_health(settings.health_port, elector)
    metrics.serve(settings.metrics_port)
    warming = asyncio.create_task(warm_up_ray(memo.state))
    live = await streams.serve(settings.stream_port, memo.state.ray)  # every replica: it needs Ray, not the Lease
    try:
        if elector is not None and not await first(elector.acquire(), stopping.wait()):
            return 0  # stopped while standing by
        return await reconcile(memo, namespaces, elector, stopping)
    finally:
        warming.cancel()
        await health.cleanup()
        if live is not None:
            await live.cleanup()


async def reconcile(memo: kopf.Memo, namespaces: tuple[str, ...], elector: LeaderElector | None,
                    stopping: asyncio.Event) -> int:
    """Rules 2-4: kopf until it ends, the Lease is lost or a signal comes."""
    stop_kopf = asyncio.Event()
    kopf_task = asyncio.create_task(kopf.operator(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
                                                  memo=memo, stop_flag=stop_kopf))
    keeping = asyncio.create_task(elector.keep() if elector else asyncio.Event().wait())
    stopped = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({kopf_task, keeping, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if keeping in done:
        exit_lost()
    stop_kopf.set()  # kopf also stops by itself on SIGTERM (it installs its own handler)
    try:
        await kopf_task
        code = 0
    except Exception:
        log.exception("the operator stopped on an error")
        code = 1
    keeping.cancel()
    stopped.cancel()
    if elector is not None:
        await elector.release()
    return code


def exit_lost() -> None:
    """No graceful stop, which could still write: controller-runtime's way."""
    log.critical("lost the Lease: exiting so that only the new leader reconciles")
    logging.shutdown()
    os._exit(EXIT_LOST)


async def first(*aws) -> bool:
    """Whether the first of `aws` (a coroutine each) finished first; the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return tasks[0] in done


async def serve_health(port: int, elector: LeaderElector | None) -> web.AppRunner:
    """/healthz: this process's event loop turns (the one kopf runs in), leader or standby."""
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"leading": elector.leading if elector else True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    if port:
        await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
