"""`kubechain webhooks`: the admission and conversion webhooks as their own process (the Deployment
kubechain-webhooks, with its own account: kuberay/base/webhooks.yaml), on an event loop that does nothing else.

Why a process and not kopf's server in the reconciler: every create paid two webhook round trips served from the
loop that also reconciles, so a burst of reconciles slowed creates and the reverse (on 2 cores, a thread would
still share the GIL); and every replica must answer, while only the leader reconciles. A crash of the reconciler
(an OOM, a lost Lease) then refuses no request.

What the validators read comes from this process: its informers (admission/informers.py), its SubjectAccessReviews
and Namespace reads (memo.state: kube, access, settings), the certificate from the shared Secret (admission/certs.py).
On SIGTERM: not ready at once, answers for `drain_seconds` more, then stops.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import kopf
from aiohttp import web
from kubernetes import client

from kubechain.api.v1alpha1 import GROUP, VERSION
from kubechain.core.naming import ANNOTATION_MAX_PRIORITY

from ..access import AccessReviews
from ..kube import Kube
from ..settings import Settings, WebhookSettings, current
from ..webhook_server import base_client_config, hosts
from .certs import FileCertificates, Material, SecretCertificates, ServingTLS
from .informers import Informer, Unwatched
from .publish import publish
from .server import Context, create_app

log = logging.getLogger(__name__)
WATCHED = {"Tool": "tools", "ToolSet": "toolsets", "Agent": "agents"}  # what admission.agent() reads
UNWATCHED = {"LLM": "llms", "Task": "tasks"}  # in the Catalog, read by no validator


@dataclass
class WebhookState:
    """`memo.state` for the handlers: what they use of the operator's state, this process's own."""
    settings: Settings
    kube: Kube
    access: AccessReviews = field(init=False)

    def __post_init__(self) -> None:
        self.access = AccessReviews(self.kube)


def main(verbose: bool = False) -> int:
    settings = current()
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if settings.json_logs else kopf.LogFormat.FULL)
    from ..controllers import webhooks  # noqa: F401  (importing it registers the hooks)

    return asyncio.run(serve(settings))


def informers(loop: asyncio.AbstractEventLoop) -> dict[str, Informer]:
    from ..controllers.catalog import _entry
    from ..controllers.taskrun.indexes import fork_sources, namespace_priorities, run_quotas

    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    found = {f"{plural}_index": Informer(kind, functools.partial(custom.list_cluster_custom_object, GROUP, VERSION,
                                                                  plural), _entry, loop)
             for kind, plural in WATCHED.items()}
    found["namespace_priorities"] = Informer(
        "Namespace", core.list_namespace, namespace_priorities, loop,
        when=lambda ns: ANNOTATION_MAX_PRIORITY in ((ns.get("metadata") or {}).get("annotations") or {}))
    # A spent RunQuota refuses new runs; a fork is checked against its source (its step and its calls' states).
    found["run_quotas"] = Informer("RunQuota", functools.partial(custom.list_cluster_custom_object, GROUP, VERSION,
                                                                 "runquotas"), run_quotas, loop)
    found["fork_sources"] = Informer("TaskRun", functools.partial(custom.list_cluster_custom_object, GROUP, VERSION,
                                                                  "taskruns"), fork_sources, loop)
    return found


def certificates(webhook: WebhookSettings) -> SecretCertificates | FileCertificates:
    lifetime = datetime.timedelta(seconds=webhook.cert_lifetime_seconds)
    if webhook.cert_secret:
        namespace, _, name = webhook.cert_secret.partition("/")
        return SecretCertificates(namespace, name, hosts(webhook), lifetime,
                                  datetime.timedelta(seconds=webhook.cert_overlap_seconds))
    return FileCertificates(Path(webhook.cert_dir), hosts(webhook), lifetime)


async def serve(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="io"))
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    webhook = settings.webhook
    kube = Kube()  # loads the kubeconfig (or the pod's account) that every client below uses
    watching = informers(loop)
    indexes = {**{name: i.view for name, i in watching.items()},
               **{f"{plural}_index": Unwatched(kind) for kind, plural in UNWATCHED.items()}}
    context = Context(memo=kopf.Memo(state=WebhookState(settings, kube)), indexes=indexes)
    context.waiting_for |= set(watching)
    for name, informer in watching.items():
        informer.start()
        asyncio.create_task(_synced(context, name, informer))
    certs, tls = certificates(webhook), ServingTLS(Path(webhook.cert_dir) / "serving")
    material = await asyncio.to_thread(certs.current)
    tls.load(material)
    runner = web.AppRunner(create_app(context), handle_signals=False, access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, webhook.address, webhook.port, ssl_context=tls.context, backlog=1024).start()
    context.waiting_for.discard("certificate")
    log.info("webhooks listening on %s:%s", webhook.address, webhook.port)
    checking = asyncio.create_task(keep_certificates(certs, tls, webhook, material, context))
    await stopping.wait()
    log.info("stopping: not ready, answering for %.0f s more", webhook.drain_seconds)
    context.draining = True
    await asyncio.sleep(webhook.drain_seconds)
    checking.cancel()
    await runner.cleanup()
    return 0


async def _synced(context: Context, name: str, informer: Informer) -> None:
    await informer.synced.wait()
    context.waiting_for.discard(name)


def _bundle(material: Material) -> str:
    return base64.b64encode(material.bundle).decode()


async def keep_certificates(certs: SecretCertificates | FileCertificates, tls: ServingTLS, webhook: WebhookSettings,
                            material: Material, context: Context) -> None:
    """Publish now, then every check: read the certificate, take a due rotation step, serve what it says, and put
    its CA bundle where the apiserver reads it. A failed round is tried again at the next."""
    first = True
    while True:
        try:
            if not first:
                material = await asyncio.to_thread(certs.current)
                material = await asyncio.to_thread(certs.rotate, material, datetime.datetime.now(datetime.timezone.utc))
                tls.load(material)
            await asyncio.to_thread(publish, base_client_config(webhook, _bundle(material)))
            context.waiting_for.discard("configuration")
            first = False
        except Exception as exc:
            log.warning("webhook certificate and configuration check failed: %s", exc)
        await asyncio.sleep(webhook.cert_check_seconds if not first else 1.0)
