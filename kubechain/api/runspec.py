"""What the operator hands to a TaskRun actor: the small interface between control and data plane.

The operator resolves Task → Agent → LLM/ToolSets/Tools (and the API key from its Secret) once,
so the actor needs no read access to anything but its own TaskRun.
"""
from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field, SecretStr, field_validator, model_validator

from .codetools import CodeToolPolicy
from .v1alpha1 import (Budget, ContextPolicy, HumanResponse, LLMSpec, MCPServer, Model, StoreLocation, ToolExecution,
                       Usage)
from .v1alpha1.common import the_one_set
from .v1alpha1.tool import EXECUTION_KINDS


class ResolvedMCP(Model):
    """A tool of an MCP server: how to reach the server and the tool's own name there."""

    namespace: str = Field(description="Namespace of the ToolSet (connections are keyed by namespace + name).")
    toolset: str = Field(description="The ToolSet that declares the server.")
    server: MCPServer = Field(description="How to reach the server (its env/header Secrets are in RunSpec.secrets).")
    tool: str = Field(description="The tool's name on the server.")

    @property
    def connection_key(self) -> tuple[str, str, str]:
        return (self.namespace, self.toolset, self.server.name)


class ResolvedExecution(ToolExecution):
    """ToolExecution plus `mcp`, a kind that only resolution produces (from a ToolSet's discovered MCP tools).

    Why a subclass and not a new field in the Tool API: users never write `execution.mcp` (an MCP tool exists
    because a server offered it), so the Tool CRD keeps its five kinds; and every user of `execution`
    (`.pure`, `.builtin`, `.delegate`, `.container` in the loop) keeps working on MCP tools unchanged: they are
    not pure, so the loop journals them Started before they run, like http tools.
    """

    mcp: ResolvedMCP | None = Field(default=None, description="Call a tool of an MCP server.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ResolvedExecution":
        the_one_set(self, (*EXECUTION_KINDS, "mcp"), "execution")
        return self

    @property
    def kind(self) -> str:
        return "mcp" if self.mcp is not None else super().kind


class ResolvedTool(Model):
    name: str = Field(description="Name shown to the LLM.")
    description: str = Field(description="Description shown to the LLM.")
    parameters: dict[str, Any] = Field(description="JSON Schema of the arguments.")
    execution: ResolvedExecution = Field(description="How the tool runs.")
    idempotent: bool = Field(default=False, description="Safe to repeat with the same idempotency key.")
    requires_approval: bool = Field(default=False, description="Each call waits for a human's approval.")
    approval_timeout_seconds: int | None = Field(default=None, description="No decision by then is a rejection.")

    @field_validator("execution", mode="before")
    @classmethod
    def _from_tool_execution(cls, value: Any) -> Any:
        """A Tool's own ToolExecution is taken as is (as a ResolvedExecution without `mcp`)."""
        if isinstance(value, ToolExecution) and not isinstance(value, ResolvedExecution):
            return {k: getattr(value, k) for k in EXECUTION_KINDS if getattr(value, k) is not None}
        return value

    def secret_refs(self) -> set[tuple[str, str]]:
        """(Secret, key) pairs whose values the actor needs to run this tool (the operator reads them for it)."""
        refs = set()
        if self.execution.mcp is not None:
            refs |= self.execution.mcp.server.secret_refs()
        if self.execution.http is not None:
            refs |= {(h.value_from.secret_key_ref.name, h.value_from.secret_key_ref.key)
                     for h in self.execution.http.headers if h.value_from is not None}
        return refs

    def openai_schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


class TaskRunRef(Model):
    namespace: str
    name: str
    uid: str


class ContextStore(Model):
    """The run's external context store, resolved by the operator (contextStorageRef, or its default): the DSN read
    from the Secret is handed with the run like the Kubernetes token, never in the actor's constructor (Ray keeps
    those in the GCS)."""

    location: StoreLocation = Field(description="Where it is (recorded in status.sealedContext.store for readers).")
    dsn: SecretStr = Field(description="The PostgreSQL DSN from the Secret; never serialised.")
    wait_seconds: float = Field(default=600, description="How long a write or read waits for the store to answer "
                                "(KUBECHAIN_CONTEXT_STORE_WAIT_SECONDS); then the run fails, reason "
                                "ContextStoreUnavailable.")
    overflow: bool = Field(default=False, description="Used only once the run reaches its apiserver allowance "
                           "(RunCaps.stored_bytes): its chunks then move there instead of the run failing with "
                           "StorageQuotaExceeded. False: every chunk goes there from the first.")


class ForkPlan(Model):
    """What a fork's first actor copies before its first step (kubechain/core/fork.py cuts it; actors/fork.py
    reads it with the run's own credentials: the source is in the same namespace)."""

    source: TaskRunRef = Field(description="The source run, pinned by uid (status.forkedFrom).")
    step: int = Field(description="The step forked at (spec.forkOf.step).")
    input: str | None = Field(default=None, description="The answer to that step's ask_human question, if given.")
    source_store: ContextStore | None = Field(default=None, description="The source's external context store, "
                                              "when its chunks are in one (status.sealedContext.store): read, "
                                              "never written.")


class CallInput(Model):
    """What a waiting tool call waited for, gathered by the operator when it resumes the run."""

    accepted: bool = Field(description="Answered, approved, or the child run Completed.")
    text: str = Field(default="", description="The answer, the rejection's reason, or the child's output or error.")
    response: HumanResponse | None = Field(default=None, description="The human reply it came from, if any.")
    usage: Usage | None = Field(default=None, description="A child run's: what its tree used.")
    cost: float | None = Field(default=None, description="A child run's: what its tree cost, in `currency`.")
    currency: str | None = Field(default=None, description="The currency of `cost`.")


class RayToolLimits(Model):
    """What a ray tool may reserve (the operator's KUBECHAIN_RAY_TOOL_* settings): checked when a Tool or ToolSet
    is admitted, and again when a call is made (a tool admitted before a limit changed)."""

    min_cpus: float = Field(default=0.1, description="Least numCpus (KUBECHAIN_RAY_TOOL_MIN_CPUS).")
    max_cpus: float = Field(default=4, description="Most numCpus (KUBECHAIN_RAY_TOOL_MAX_CPUS).")
    max_gpus: float = Field(default=1, description="Most numGpus (KUBECHAIN_RAY_TOOL_MAX_GPUS).")
    max_memory: int = Field(default=8 * 1024 ** 3, description="Most memory, bytes (KUBECHAIN_RAY_TOOL_MAX_MEMORY).")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom resources allowed, with the most "
                                        "of each (KUBECHAIN_RAY_TOOL_RESOURCES); others are refused.")


class RunCaps(Model):
    """The operator's limits that the actor enforces on each LLM reply (see kubechain/operator/settings.py
    LimitSettings): what is past one is a tool error naming it, and the run goes on."""

    tool_calls_per_reply: int = Field(default=64, description="Calls of one reply that run "
                                      "(KUBECHAIN_MAX_TOOL_CALLS_PER_REPLY).")
    child_runs_per_turn: int = Field(default=8, description="Delegate calls of one reply that start a child run "
                                     "(KUBECHAIN_MAX_CHILD_RUNS_PER_TURN).")
    journal_bytes: int = Field(default=64 * 1024 * 1024, description="Bytes the run's journal keeps "
                               "(KUBECHAIN_MAX_JOURNAL_BYTES).")
    ray: RayToolLimits = Field(default_factory=RayToolLimits, description="What ray tools may reserve.")
    stored_bytes: int = Field(default=0, description="Bytes the run may keep in the apiserver, status and sealed "
                              "chunks (its share of the namespace's storage cap; 0: no limit): a checkpoint past it "
                              "is not written and the run fails with reason StorageQuotaExceeded.")
    stored_source: str = Field(default="", description="What sets stored_bytes, for the run's error message.")


class KubeCredentials(Model):
    """How the actor reaches the apiserver, handed to it with the run: the token of its namespace's
    `kubechain-actor` ServiceAccount (a TokenRequest, short-lived, renewed by the operator while the run lives).
    That account may write only what an actor writes, in its own namespace; the Ray workers' identity has no rights."""

    server: str = Field(description="The apiserver's URL, as the operator reaches it.")
    token: SecretStr = Field(description="A bearer token of the namespace's actor ServiceAccount; never serialised.")
    ca_data: str | None = Field(default=None, description="PEM of the CA that signs the apiserver's certificate "
                                "(none: the system's trust store).")
    insecure: bool = Field(default=False, description="Skip TLS verification (only when the operator's own "
                           "connection does: a local cluster).")
    expires_at: float = Field(description="When the token expires (seconds since the epoch).")


class RunSpec(Model):
    taskrun: TaskRunRef
    epoch: int = Field(default=1, description="The fencing epoch this actor holds (see TaskRunStatus.epoch).")
    agent: str
    llm: LLMSpec
    api_key: SecretStr | None = Field(default=None, description="From the LLM's Secret; repr-masked, never serialised to status.")
    system_prompt: str
    user_input: str
    tools: list[ResolvedTool] = Field(default_factory=list)
    max_turns: int = Field(default=50, description="LLM requests allowed.")
    budget: Budget | None = Field(default=None, description="What the run's tree may spend (TaskRun.spec.budget).")
    context: ContextPolicy = Field(default_factory=ContextPolicy, description="The Agent's context policy.")
    lineage: list[str] = Field(default_factory=list, description="Agents of the ancestor runs, root first.")
    max_delegation_depth: int = Field(default=5, description="How deep a chain of delegations may go.")
    inputs: dict[str, CallInput] = Field(default_factory=dict, description="Inputs of the waiting calls, by call "
                                         "key (ToolCallRecord.key: the LLM's call id may repeat across steps).")
    traceparent: str | None = Field(default=None, description="The run's trace context: actor spans join it.")
    max_parallel_tool_calls: int = Field(default=4, description="Tool calls of one turn running at a time.")
    local_tool_timeout_seconds: float = Field(default=10, gt=0, description="Time limit of a call's argument check "
                                              "and of a builtin, run off the actor's event loop (the operator's "
                                              "KUBECHAIN_LOCAL_TOOL_TIMEOUT_SECONDS): past it the call is a tool error.")
    secrets: dict[str, SecretStr] = Field(default_factory=dict, description="Values of the Secret keys the tools "
                                          "reference, by `secret/key` (see secret_key); never serialised to status.")
    caps: RunCaps = Field(default_factory=RunCaps, description="The operator's limits on each reply.")
    json_logs: bool = Field(default=False, description="The actor logs one JSON object per line (the operator's "
                                                       "KUBECHAIN_LOG_FORMAT).")
    code_tools: CodeToolPolicy = Field(default_factory=CodeToolPolicy, description="The cluster admin's rules for "
                                       "the run's namespace: the actor checks a ray tool or stdio MCP server against "
                                       "them before it runs one (default: none may run).")
    kube: KubeCredentials | None = Field(default=None, description="The actor's Kubernetes credentials for this run "
                                         "(none: the process's own, as tests and benches use).")
    fork: ForkPlan | None = Field(default=None, description="For a fork: the source's checkpoint to copy when the "
                                  "run has no conversation yet (its first actor, or one that crashed mid-copy).")
    context_store: ContextStore | None = Field(default=None, description="The external store of the run's sealed "
                                               "chunks (none: ConfigMaps only).")


def secret_key(name: str, key: str) -> str:
    return f"{name}/{key}"


class TaskRunActorAPI(Protocol):
    """The methods the operator may call on a TaskRun actor (see actors/taskrun_actor.py)."""

    async def holds(self, uid: str | None = None) -> bool:
        """Whether the actor holds the run of TaskRun `uid` (any run, without it; a pooled actor holds none
        until `run(spec)`, and none again after `recycle()`)."""

    async def run(self, spec: RunSpec | None = None) -> str:
        """Run (or join the running) loop until the TaskRun ends; returns the final phase. Idempotent. `spec`
        assigns a pooled actor to the run; joining an actor that holds another run (or none) raises."""

    async def ping(self) -> bool:
        """True. Answered on the actor's event loop: a supervisor whose pings go unanswered for the operator's
        KUBECHAIN_ACTOR_WEDGED_SECONDS replaces the actor (its loop is blocked)."""

    async def renew(self, uid: str, kube: KubeCredentials) -> bool:
        """A fresh token for the run of TaskRun `uid`, before the one it holds expires; False if it holds another
        run (or none)."""

    async def recycle(self) -> bool:
        """After its run ended: a pooled actor drops the run and is ready for `run(spec)` again (True), or
        ends itself (False)."""
