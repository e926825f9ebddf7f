"""Tool: something an agent can call. Exactly one execution kind: builtin, http, container, delegate or ray."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from .common import AGE, READY_COLUMNS, KindInfo, LocalObjectReference, Model, PrinterColumn, ReadyStatus, SecretKeyRef, the_one_set

BuiltinName = Literal["calculator", "current_time", "text", "echo", "ask_human"]
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class BuiltinExecution(Model):
    name: BuiltinName = Field(
        description="Builtin to run: `calculator` (safe arithmetic), `current_time` (now, in a time zone), "
                    "`text` (string utilities), `echo` (returns its arguments; no-op for tests and benchmarks), "
                    "`ask_human` (pauses the run until a human answers the question; see TaskRun spec.responses).")


class ValueSource(Model):
    secret_key_ref: SecretKeyRef = Field(description="A key of a Secret; its value is never shown in status.")


IMAGE_PATTERN = (r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                 r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
QUANTITY_PATTERN = r"^[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$"


class EnvVar(Model):
    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Environment variable name.")
    value: str = Field(default="", description="Literal value.")
    value_from: ValueSource | None = Field(default=None, description="Take the value from a Secret instead.")

    @model_validator(mode="after")
    def _one_value(self) -> "EnvVar":
        if self.value and self.value_from is not None:
            raise ValueError(f"env {self.name}: set value or valueFrom, not both")
        return self


Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, description="A Kubernetes quantity, e.g. 500m, 1, 64Mi.")]


class ResourceRequirements(Model):
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Minimum resources (e.g. cpu: 100m, memory: 64Mi).")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources.")


class ContainerExecution(Model):
    """Each call runs as a Kubernetes Job owned by the TaskRun. The container gets the call's arguments as JSON in
    the environment variable KUBECHAIN_ARGUMENTS (also KUBECHAIN_TOOL and KUBECHAIN_IDEMPOTENCY_KEY). Its result is
    its termination message (write it to /dev/termination-log; the kubelet keeps 4 KiB), else the end of its log;
    a non-zero exit is a tool error."""

    image: str = Field(pattern=IMAGE_PATTERN, description="Container image that runs the tool, as a reference "
                                                          "([registry/]name[:tag][@sha256:digest]).")
    command: list[str] = Field(default_factory=list, description="Entrypoint override.")
    args: list[str] = Field(default_factory=list, description="Arguments to the entrypoint.")
    env: list[EnvVar] = Field(default_factory=list, description="Environment variables (values or Secret keys).")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements,
                                            description="CPU and memory of the tool's container.")
    timeout_seconds: int = Field(default=300, ge=1, description="The Job's activeDeadlineSeconds: then the call "
                                                                "is killed and reported as a tool error.")
    service_account_name: str | None = Field(default=None, description="Service account of the tool's pod. Default: "
                                             "the namespace's default, without a mounted token.")

    @model_validator(mode="after")
    def _own_env(self) -> "ContainerExecution":
        if reserved := [e.name for e in self.env if e.name.startswith("KUBECHAIN_")]:
            raise ValueError(f"env names starting with KUBECHAIN_ are set by kubechain: {', '.join(reserved)}")
        return self


class HTTPHeader(Model):
    name: str = Field(min_length=1, description="Header name.")
    value: str = Field(default="", description="Header value.")
    value_from: ValueSource | None = Field(default=None, description="Take the value from a Secret instead.")


class HTTPExecution(Model):
    url: str = Field(pattern=r"^https?://", description="Endpoint that receives each call: a POST of the arguments "
                     "as JSON, with an Idempotency-Key header. The response body is the result (up to 64 KiB: a "
                     "longer one is cut there, with a marker saying so); a non-2xx status is a tool error. Redirects "
                     "are not followed (the request carries the headers): a 3xx is a tool error naming the Location.")
    headers: list[HTTPHeader] = Field(default_factory=list, description="Extra request headers.")
    timeout_seconds: float = Field(default=30, gt=0, description="Request timeout, in seconds.")


class RayExecution(Model):
    """A Python callable run as a Ray task, scheduled by Ray next to the agents with its own resources: e.g. a GPU
    embedding step. It is called with the arguments as keyword arguments; a str result is the tool's result,
    anything else is serialised as JSON. Code run for the tenant: refused unless the cluster admin allows it in
    the namespace (label kubechain.dev/code-tools=allowed or KUBECHAIN_CODE_TOOLS_NAMESPACES) and lists the
    callable (KUBECHAIN_RAY_FUNCTIONS)."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                          description="Import path `package.module:callable`, importable on the Ray workers; one "
                                      "the operator's KUBECHAIN_RAY_FUNCTIONS allows.")
    num_cpus: float = Field(default=1, ge=0, description="CPUs the task reserves.")
    num_gpus: float = Field(default=0, ge=0, description="GPUs the task reserves.")
    memory: int | None = Field(default=None, ge=0, description="Memory the task reserves, in bytes.")
    resources: dict[str, Annotated[float, Field(ge=0, description="Amount of the resource.")]] = Field(
        default_factory=dict, description="Custom Ray resources the task reserves.")
    runtime_env: dict[str, Any] = Field(default_factory=dict, description="Ray runtime_env of the task: only keys "
                                        "the operator's KUBECHAIN_RAY_RUNTIME_ENV_KEYS allows (e.g. env_vars, whose "
                                        "names pass KUBECHAIN_CODE_TOOLS_ENV).")
    timeout_seconds: float = Field(default=300, gt=0, description="Cancel the task after this many seconds: a "
                                                                  "tool error.")


class DelegateExecution(Model):
    agent_ref: LocalObjectReference = Field(description="Agent that handles the call as a child TaskRun (argument "
                                            "`message` is its user input; its output or error is the result).")


EXECUTION_KINDS = ("builtin", "http", "container", "delegate", "ray")


class ToolExecution(Model):
    """Exactly one of `builtin`, `http`, `container`, `delegate`, `ray`."""

    builtin: BuiltinExecution | None = Field(default=None, description="Run a tool built into kubechain.")
    http: HTTPExecution | None = Field(default=None, description="Call an HTTP endpoint.")
    container: ContainerExecution | None = Field(default=None, description="Run each call as a Kubernetes Job.")
    delegate: DelegateExecution | None = Field(default=None, description="Delegate the call to another agent, as a child TaskRun.")
    ray: RayExecution | None = Field(default=None, description="Run a Python callable as a Ray task.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ToolExecution":
        the_one_set(self, EXECUTION_KINDS, "execution")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in EXECUTION_KINDS if getattr(self, k) is not None)

    @property
    def pure(self) -> bool:
        """Builtins have no effects outside the actor: running one twice is harmless."""
        return self.builtin is not None and self.builtin.name != "ask_human"


# The apiserver enforces "exactly one" too (a structural schema may carry oneOf of `required`).
ToolExecution.model_config["json_schema_extra"] = {"oneOf": [{"required": [k]} for k in EXECUTION_KINDS]}


class ToolSpec(Model):
    description: str = Field(min_length=1, description="What the tool does; shown to the LLM.")
    arguments: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema (type object) of the tool's arguments, shown to the LLM. Default: the builtin's "
                    "own schema, else an object with no properties.")
    execution: ToolExecution = Field(description="How the tool runs: exactly one of builtin, http, container, "
                                                 "delegate, ray.")
    idempotent: bool = Field(
        default=False,
        description="Calls may be repeated safely with the same idempotency key. A call cut short by a crash is then "
                    "run again; otherwise it is reported to the LLM as interrupted, outcome unknown - never run twice.")
    requires_approval: bool = Field(
        default=False, description="Each call waits (TaskRun PausedForUserInput) until a human approves it - then it "
                                   "runs - or rejects it - then the LLM gets the rejection as the tool's result.")
    approval_timeout_seconds: int | None = Field(
        default=None, ge=1, description="No decision within this many seconds counts as a rejection. Default: wait.")


class ToolStatus(ReadyStatus):
    pass


KIND = KindInfo(
    kind="Tool", plural="tools", singular="tool", spec=ToolSpec, status=ToolStatus, short_names=("tl",),
    description="A tool that agents can call.",
    columns=(PrinterColumn("Description", ".spec.description", priority=1), *READY_COLUMNS, AGE),
)
