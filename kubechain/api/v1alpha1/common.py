"""Types shared by every kind: references, conditions, the base model and kind metadata.

Types only, no I/O (see the import-linter contract in pyproject.toml).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kubechain.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "kubechain"


class Model(BaseModel):
    """Base of every API type: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", defer_build=True)

    def to_wire(self, include: set[str] | None = None) -> dict:
        """The JSON-ready dict as stored in Kubernetes: aliases, no nulls, no empty strings."""
        return without_empty_strings(self.model_dump(mode="json", by_alias=True, exclude_none=True, include=include))


def the_one_set(model: Any, names: tuple[str, ...], what: str) -> str:
    """The one of `names` that `model` sets; a ValueError naming `what` unless exactly one is set."""
    chosen = [n for n in names if getattr(model, n) is not None]
    if len(chosen) != 1:
        raise ValueError(f"{what} must set exactly one of {', '.join(names)}; got {chosen or 'none'}")
    return chosen[0]


def without_empty_strings(value: Any) -> Any:
    """`value` with "" turned into None (null), which a merge patch reads as "remove the field".

    Empty strings and absent fields mean the same thing in these models, and the kube-apiserver 1.20
    that the local control plane builds rejects "" inside custom resources as null. Inside a list (which
    a merge patch replaces whole) such fields are left out instead: a null there is not a removal.
    """
    if value == "":
        return None
    if isinstance(value, dict):
        return {k: without_empty_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dropped(v) for v in value]
    return value


def _dropped(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _dropped(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_dropped(v) for v in value]
    return value


class LocalObjectReference(Model):
    name: str = Field(min_length=1, description="Name of an object in the same namespace.")


class SecretKeyRef(Model):
    name: str = Field(min_length=1, description="Name of a Secret in the same namespace.")
    key: str = Field(min_length=1, description="Key within the Secret's data.")


class Condition(Model):
    """A Kubernetes-style condition, for `kubectl wait --for=condition=...`."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase machine-readable reason.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(default="", description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="metadata.generation this condition was computed from.")


class ReadyStatus(Model):
    """Status shared by kinds that are either usable or not (LLM, Tool, ToolSet, Agent)."""

    ready: bool = Field(default=False, description="True when the object is valid and all of its dependencies are ready.")
    message: str = Field(default="", description="Why the object is (not) ready.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions; `Ready` mirrors `ready`.")
    observed_generation: int | None = Field(default=None, description="metadata.generation the status was computed from.")


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    """The inverse of rfc3339() (and of Kubernetes' timestamps)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def with_condition(previous: list[Condition], type: str, ok: bool | None, reason: str, message: str,
                   generation: int | None = None, now: datetime | None = None) -> list[Condition]:
    """`previous` with condition `type` set (ok None: Unknown); lastTransitionTime moves only when the status flips
    (to `now`, the clock's time when not given)."""
    status = "Unknown" if ok is None else "True" if ok else "False"
    old = next((c for c in previous if c.type == type), None)
    since = old.last_transition_time if old and old.status == status else rfc3339(now) if now else now_rfc3339()
    cond = Condition(type=type, status=status, reason=reason, message=message,
                     last_transition_time=since, observed_generation=generation)
    return [c for c in previous if c.type != type] + [cond]


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """Everything the CRD generator and the controllers need to know about a kind."""

    kind: str
    plural: str
    spec: type[Model]
    status: type[Model]
    short_names: tuple[str, ...] = ()
    columns: tuple[PrinterColumn, ...] = ()
    description: str = ""
    singular: str = field(default="")
    scope: str = "Namespaced"  # or Cluster: a cluster admin's kind (tenants' namespaced Roles cannot reach it)

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


READY_COLUMNS = (
    PrinterColumn("Ready", ".status.ready", "boolean", "Whether the object is usable."),
    PrinterColumn("Message", ".status.message", "string", "Why it is (not) ready.", priority=1),
)
AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
