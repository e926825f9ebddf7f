"""RunQuota: a daemon per quota that counts what its namespace's runs spent (kubechain/core/quotas.py, pure) from
the TaskRun index, every few seconds, and writes the quota's status when it changed. Admission reads the quotas
(controllers/taskrun/queue.py): a spent quota holds its namespace's new runs in Pending; when a new period frees
it, the queued runs are woken."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import kopf

from kubechain.api.v1alpha1 import GROUP, VERSION, RunQuotaSpec, RunQuotaStatus
from kubechain.core.quotas import account
from kubechain.core.resolve import parse

from .taskrun.queue import wake_admitted

COUNT_SECONDS = 5.0  # how often a quota counts: the lag before a spent quota holds new runs back


@kopf.daemon(GROUP, VERSION, "runquotas", cancellation_timeout=1.0)
async def count(stopped: kopf.DaemonStopped, name: str, body: kopf.Body, memo: kopf.Memo, run_spend: kopf.Index,
                **kwargs: Any) -> None:
    state = memo.state
    written = RunQuotaStatus.model_validate(dict(body.get("status") or {}))
    while not stopped:
        spec, error = parse(RunQuotaSpec, dict(body.get("spec") or {}))
        if spec is None:
            new = written.model_copy(update={"message": f"invalid spec: {error}"})
        else:
            runs = list(run_spend.get(spec.namespace, []))
            new = account(name, spec, written, runs, datetime.now(timezone.utc))
        if new != written:
            await state.kube.patch_cluster_status("runquotas", name, {**new.to_wire(), "counted": {
                **{uid: None for uid in written.counted if uid not in new.counted},
                **{uid: c.to_wire() for uid, c in new.counted.items()}}})
            if written.exceeded and not new.exceeded:  # a new period: the namespace's queued runs may start
                await wake_admitted(state, kwargs)
            written = new
        await stopped.wait(COUNT_SECONDS)
