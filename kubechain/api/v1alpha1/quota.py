"""RunQuota: a cluster admin's limits on what a namespace's runs spend per period and how many run at once, as a
ResourceQuota limits its objects. Cluster-scoped, so tenants, whose Roles are namespaced, can read (if granted) but
never edit their own."""
from __future__ import annotations

from enum import Enum

from pydantic import Field

from .common import AGE, KindInfo, Model, PrinterColumn


class QuotaPeriod(str, Enum):
    """A calendar window in UTC: usage counts from its start and starts again at the next."""

    HOUR = "Hour"
    DAY = "Day"
    WEEK = "Week"    # from Monday 00:00
    MONTH = "Month"


class RunQuotaSpec(Model):
    namespace: str = Field(min_length=1, description="The namespace whose runs it limits.")
    period: QuotaPeriod = Field(default=QuotaPeriod.DAY, description="The window maxTokens and maxCost cover: "
                                "Hour, Day, Week or Month (UTC).")
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens the namespace's runs may use per period; "
                                   "once used, new runs wait in Pending (reason Queued) until the next period.")
    max_cost: float | None = Field(default=None, gt=0, description="The same for cost, in `currency` (runs on LLMs "
                                   "priced in another currency are not counted).")
    currency: str = Field(default="USD", min_length=1, max_length=8, description="The currency of maxCost.")
    max_running: int | None = Field(default=None, ge=0, description="Runs of the namespace holding an actor at once "
                                    "(with the Namespace annotation kubechain.dev/max-running and "
                                    "KUBECHAIN_MAX_RUNNING_PER_NAMESPACE, the least applies).")


class Counted(Model):
    """What the quota counted of one TaskRun."""

    tokens: int = Field(default=0, description="The run's own tokens counted so far.")
    cost: float = Field(default=0.0, description="Its own cost counted so far.")
    ended: bool = Field(default=False, description="The run had ended when last counted.")


class RunQuotaStatus(Model):
    period_start: str | None = Field(default=None, description="When the current period began (RFC 3339).")
    used_tokens: int = Field(default=0, description="Tokens the namespace's runs used this period.")
    used_cost: float = Field(default=0.0, description="What they cost this period, in spec.currency.")
    running: int = Field(default=0, description="Runs of the namespace holding an actor now.")
    exceeded: bool = Field(default=False, description="This period's tokens or cost are spent: new runs wait.")
    message: str = Field(default="", description="What the quota holds back, if anything.")
    counted: dict[str, Counted] = Field(default_factory=dict, description="Per TaskRun uid: what of it was "
                                        "counted so far (what an operator restart does not count again; a "
                                        "deleted run's spend stays counted). Deleted runs are dropped at the next "
                                        "period.")


KIND = KindInfo(
    kind="RunQuota", plural="runquotas", singular="runquota", spec=RunQuotaSpec, status=RunQuotaStatus,
    short_names=("rq",), scope="Cluster",
    description="A cluster admin's limits on a namespace's runs: tokens and cost per period, runs at once.",
    columns=(PrinterColumn("Namespace", ".spec.namespace"), PrinterColumn("Period", ".spec.period"),
             PrinterColumn("Tokens", ".status.usedTokens", "integer", "Used this period."),
             PrinterColumn("Max", ".spec.maxTokens", "integer"),
             PrinterColumn("Exceeded", ".status.exceeded", "boolean"),
             PrinterColumn("Message", ".status.message", priority=1), AGE),
)
