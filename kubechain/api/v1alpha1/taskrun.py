"""TaskRun: one execution of a Task by one Ray actor, checkpointed into its status after every step."""
from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field

from pydantic import model_validator

from .common import AGE, Condition, KindInfo, LocalObjectReference, Model, PrinterColumn


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    PAUSED_FOR_USER_INPUT = "PausedForUserInput"  # a human must answer or approve; no actor is held
    DELEGATING = "Delegating"                     # waiting for child TaskRuns or tool Jobs; no actor is held
    COMPLETED = "Completed"
    FAILED = "Failed"                             # reason says why: LLMError, Cancelled, Timeout, MaxTurnsExceeded...

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED)


class FunctionCall(Model):
    name: str = Field(description="Function (tool) name the model asked for.")
    arguments: str = Field(description="Arguments as the raw JSON string the model produced.")


class ToolCall(Model):
    id: str = Field(description="Tool call id assigned by the model.")
    type: Literal["function"] = Field(default="function", description="Always `function`.")
    function: FunctionCall = Field(description="The requested call.")


class Message(Model):
    """One chat message in OpenAI chat-completions format (field names as OpenAI spells them)."""

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Author of the message.")
    content: str | None = Field(default=None, description="Text of the message.")
    tool_calls: list[ToolCall] | None = Field(default=None, alias="tool_calls", description="Tool calls requested by an assistant message.")
    tool_call_id: str | None = Field(default=None, alias="tool_call_id", description="For role `tool`: the call this message answers.")
    name: str | None = Field(default=None, description="Optional author name.")


class CallState(str, Enum):
    PENDING = "Pending"          # asked for by the LLM, not started
    WAITING = "Waiting"          # waits for a human's answer or approval, or for a child TaskRun (see waitingFor)
    STARTED = "Started"          # journaled before a side-effecting tool ran; no outcome recorded yet
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"  # started, then the actor died; not idempotent, so not run again

    @property
    def finished(self) -> bool:
        return self in (CallState.SUCCEEDED, CallState.FAILED, CallState.INTERRUPTED)


class HumanResponse(Model):
    """A human's reply to one waiting tool call, written into spec.responses under the call's key (its
    idempotencyKey in status.toolCallHistory, `<uid>/<step>/<call id>`: an LLM server may reuse call ids across
    steps, the key never repeats within a run):
    `kubectl patch taskrun R --type merge -p '{"spec":{"responses":{"<call key>":{"answer":"..."}}}}'`."""

    answer: str | None = Field(default=None, description="The reply to an ask_human question.")
    approved: bool | None = Field(default=None, description="The decision on a call that requires approval.")
    reason: str = Field(default="", description="Why (a rejection's reason reaches the LLM).")
    by: str = Field(default="", description="Who responded (free text, for the audit trail).")


class WaitingFor(str, Enum):
    ANSWER = "Answer"        # ask_human: a human's reply is the result
    APPROVAL = "Approval"    # a tool with requiresApproval: a human approves (the tool runs) or rejects
    CHILD_RUN = "ChildRun"   # a delegate tool: the child TaskRun's output is the result
    JOB = "Job"              # a container tool: the Kubernetes Job's result (termination message or log) is the result

    @property
    def human(self) -> bool:
        return self in (WaitingFor.ANSWER, WaitingFor.APPROVAL)


class ToolCallRecord(Model):
    """One entry of the write-ahead tool journal."""

    id: str = Field(description="Tool call id (as in the context window).")
    step: int = Field(description="Step in which the LLM asked for the call.")
    tool: str = Field(description="Tool name.")
    arguments: str = Field(description="Arguments as the raw JSON string from the LLM.")
    state: CallState = Field(default=CallState.PENDING,
                             description="Pending, Started, Succeeded, Failed or Interrupted (outcome unknown).")
    idempotency_key: str = Field(default="", description="Stable key of this call (TaskRun uid, step, call id), "
                                 "unique within the run: handed to tools so a service can de-duplicate, and the "
                                 "key of the call's reply in spec.responses, its child TaskRun's name and its Job's.")
    attempts: int = Field(default=0, description="How many times the tool was started for this call.")
    result: str | None = Field(default=None, description="The tool's result, when it succeeded.")
    error: str | None = Field(default=None, description="The error reported to the LLM, when it failed.")
    waiting_for: WaitingFor | None = Field(default=None, description="While Waiting: Answer, Approval, ChildRun or Job.")
    question: str | None = Field(default=None, description="What the human is asked (ask_human), or what needs approval.")
    expires_at: str | None = Field(default=None, description="Approval deadline (RFC 3339): no decision by then "
                                                             "counts as a rejection.")
    response: HumanResponse | None = Field(default=None, description="The human reply this call used (audit).")
    child_run: str | None = Field(default=None, description="The child TaskRun a delegate call runs as.")
    child_usage: Usage | None = Field(default=None, description="What the child TaskRun's tree used, journaled with "
                                      "its result (in the parent's status.treeUsage).")
    child_cost: float | None = Field(default=None, description="What the child TaskRun's tree cost, in the "
                                     "parent's currency.")
    delegated_to: str | None = Field(default=None, description="The Agent the child TaskRun runs.")
    job: str | None = Field(default=None, description="The Kubernetes Job a container call runs as (deleted once "
                                                      "its result is journaled).")
    start_time: str | None = Field(default=None, description="When the call started (RFC 3339).")
    end_time: str | None = Field(default=None, description="When the call ended (RFC 3339).")

    @property
    def key(self) -> str:
        """What replies, inputs, child runs and Jobs of this call are keyed by: the LLM's call id alone may repeat
        in a later step (servers that number calls `call_0`, `0`...), the idempotency key never does."""
        return self.idempotency_key or self.id


class PhaseTransition(Model):
    phase: Phase = Field(description="The phase entered.")
    time: str = Field(description="When (RFC 3339).")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field(default="", description="Details.")


class Usage(Model):
    prompt_tokens: int = Field(default=0, description="Prompt tokens summed over all LLM requests.")
    completion_tokens: int = Field(default=0, description="Completion tokens summed over all LLM requests.")
    total_tokens: int = Field(default=0, description="Sum of the two.")
    cached_prompt_tokens: int = Field(default=0, description="Of the prompt tokens, those the provider served from "
                                      "its cache (priced apart: LLM.spec.pricing).")

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens,
                     total_tokens=self.total_tokens + other.total_tokens,
                     cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens)


class Budget(Model):
    """What a run and every run it delegates to may spend together: a child draws from what its parent has left
    (parallel children share it equally); a run past it stops before its next LLM request, reason BudgetExceeded."""

    max_tokens: int | None = Field(default=None, ge=1, description="Tokens (prompt + completion) of the whole tree.")
    max_cost: float | None = Field(default=None, gt=0, description="Cost of the whole tree, in its LLM's currency "
                                   "(LLM.spec.pricing; runs on an LLM without pricing count no cost).")


class ActorRef(Model):
    name: str = Field(description="Name of the Ray actor (in Ray namespace `namespace`).")
    namespace: str = Field(description="Ray namespace of the actor.")
    id: str = Field(default="", description="Ray actor id, as shown in the Ray dashboard.")
    restarts: int = Field(default=0, description="How many times an actor was (re)started for this run after the first.")


class SealedContext(Model):
    """How much of the conversation lives out of line. Chunk i is in ConfigMaps `<taskrun>-ctx-<i>-<part>`;
    part 0 carries the chunk's description (annotation kubechain.dev/chunk). Constant size, however long the run."""

    chunks: int = Field(default=0, description="Number of sealed chunks.")
    messages: int = Field(default=0, description="Messages sealed (they precede contextWindow).")
    tool_calls: int = Field(default=0, description="Tool call records sealed (they precede toolCallHistory).")
    bytes: int = Field(default=0, description="Size of the sealed JSON.")
    sha256: str = Field(default="", description="SHA-256 chained over the chunks in order (of the previous value "
                        "and each chunk's own sha256), checked when they are read back: a chunk rewritten after it "
                        "was sealed, or one missing, fails the run with reason CheckpointCorrupt.")
    store: StoreLocation | None = Field(default=None, description="Where the chunks are: none, in ConfigMaps "
                                        "(`<taskrun>-ctx-<i>-<part>`); else in this external store, by run uid.")
    moved: int = Field(default=0, description="Chunks the run moved from its ConfigMaps to `store` when it reached "
                       "its apiserver allowance (the operator then deletes those ConfigMaps).")
    dropped_at: str | None = Field(default=None, description="When the operator deleted the chunks of the ended "
                                   "run (contextRetentionSeconds passed; RFC 3339). The counts above say what was "
                                   "dropped; the tail in the status stays.")


class StoreLocation(Model):
    """An external context store: a PostgreSQL database whose DSN is in a Secret. Readers (kubechain transcript,
    the console) find the chunks there by the run's uid."""

    kind: Literal["PostgreSQL"] = Field(default="PostgreSQL", description="The store's kind.")
    namespace: str = Field(description="Namespace of the Secret holding the DSN (the run's, or the operator's for "
                           "its default store).")
    secret: str = Field(description="The Secret holding the DSN.")
    key: str = Field(default="dsn", description="Its key holding the DSN.")


class ContextStoreWait(Model):
    """The actor waits for its external context store (condition ContextStoreAvailable=False)."""

    since: str = Field(description="When the first write or read failed (RFC 3339).")
    until: str = Field(description="When the run fails with reason ContextStoreUnavailable if the store is still "
                       "away (RFC 3339; the operator's KUBECHAIN_CONTEXT_STORE_WAIT_SECONDS).")
    message: str = Field(description="The store and its last error.")


class ContextChunk(Model):
    """A sealed, immutable piece of a conversation, stored out of line (ConfigMaps `<name>-<part>`)."""

    name: str = Field(description="ConfigMap name prefix; the parts are `<name>-0`, `<name>-1`, ...")
    parts: int = Field(description="How many ConfigMaps hold the chunk.")
    messages: int = Field(description="Messages in the chunk.")
    tool_calls: int = Field(description="Tool call records in the chunk.")
    bytes: int = Field(description="Size of the chunk's JSON.")
    sha256: str = Field(description="SHA-256 of the chunk's JSON, checked when it is read back.")
    epoch: int = Field(default=0, description="Epoch of the actor that sealed it: an actor replaces a leftover "
                       "chunk only from an older epoch (never referenced by the status), never a newer one's.")


class ContextStorageRef(Model):
    """Where a run keeps its sealed context chunks (older messages and tool calls). ConfigMap: in the apiserver
    (etcd), owned by the TaskRun. PostgreSQL: in an external database whose DSN is key `key` of Secret `name` in
    the run's namespace; the author of the Task or TaskRun must be allowed to `get` that Secret. Unset: the
    operator's default (KUBECHAIN_CONTEXT_STORAGE_SECRET, else ConfigMap)."""

    kind: Literal["ConfigMap", "PostgreSQL", "PersistentVolumeClaim"] = Field(description="ConfigMap (in the "
                                                                               "apiserver; past the run's storage "
                                                                               "allowance the chunks move to the "
                                                                               "operator's default store, if any) or "
                                                                               "PostgreSQL. PersistentVolumeClaim is "
                                                                               "accepted for older objects and kept "
                                                                               "as ConfigMap.")
    name: str = Field(default="", description="PostgreSQL: the Secret holding the DSN, in the run's namespace "
                      "(libpq URI or key=value form). ConfigMap: unused.")
    key: str = Field(default="dsn", min_length=1, description="PostgreSQL: the Secret's key holding the DSN.")

    @model_validator(mode="after")
    def _named(self) -> "ContextStorageRef":
        if self.kind == "PostgreSQL" and not self.name:
            raise ValueError("contextStorageRef: kind PostgreSQL needs name (the Secret holding the DSN)")
        return self


class RunLimits(Model):
    """Limits of a run, set on a Task (copied to its TaskRun) or on a TaskRun."""

    max_turns: int = Field(default=50, ge=1, description="LLM requests allowed; one more fails the run with reason "
                                                         "MaxTurnsExceeded.")
    timeout_seconds: int | None = Field(default=None, ge=1, description="Wall-clock limit from the run's start "
                                        "(pauses included; operator restarts do not reset it); then the run fails "
                                        "with reason Timeout. Default: none.")
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, description="Delete the TaskRun this many "
                                                   "seconds after it Completed or Failed; 0: keep it. Default: the "
                                                   "operator's KUBECHAIN_TTL_SECONDS_AFTER_FINISHED (7 days).")
    context_retention_seconds: int | None = Field(default=None, ge=0, description="Delete the run's sealed context "
                                                  "chunks this many seconds after it Completed or Failed, keeping "
                                                  "the TaskRun (output, usage, the tail of the conversation); the "
                                                  "transcript then says what was dropped and when. 0: keep them as "
                                                  "long as the run. Default: the operator's "
                                                  "KUBECHAIN_CONTEXT_RETENTION_SECONDS (0).")
    priority: int = Field(default=0, description="When runs queue for a slot (see the operator's limits), higher "
                                                 "priority runs go first. Child runs inherit their parent's.")
    max_parallel_tool_calls: int = Field(default=4, ge=1, le=64, description="Tool calls the LLM asks for in one "
                                         "turn run concurrently, at most this many at a time (container Jobs too).")
    crash_loop_limit: int = Field(default=5, ge=1, le=100, description="Losses of the run's actor at one step (its "
                                  "process died, or its loop raised, before the next step was checkpointed) before "
                                  "the run fails with reason CrashLoop; the attempts in between back off.")
    budget: Budget | None = Field(default=None, description="Tokens and cost the run and its delegated runs may "
                                  "spend together. Default: no limit.")
    context_storage_ref: ContextStorageRef | None = Field(default=None, description="Where the run's sealed context "
                                                          "chunks are kept (see ContextStorageRef). Default: the "
                                                          "operator's KUBECHAIN_CONTEXT_STORAGE_SECRET, else "
                                                          "ConfigMaps. Read when the run's first chunk is sealed.")


class LLMRetry(Model):
    """An episode of failed LLM requests the run is riding out (see LLM.spec.retry); cleared by the next answer."""

    attempts: int = Field(description="Failed attempts in this episode.")
    since: str = Field(description="When the episode's first attempt failed (RFC 3339).")
    retry_at: str = Field(description="When the next attempt is due (RFC 3339).")
    reason: str = Field(description="RateLimited (429), ServerError (5xx, 408, 409) or Unreachable (no answer).")
    last_error: str = Field(description="The provider's last error.")


class ContextState(Model):
    """What the model is sent of the conversation once it has been compacted (Agent.spec.context). Indexes count
    the whole conversation (contextWindow with the sealed chunks in front), which is never changed."""

    compactions: int = Field(default=0, description="Compactions so far; each is marked in the conversation by a "
                             "system message named kubechain-compaction (never sent to the model).")
    omitted_through: int = Field(default=0, description="Messages before this index (after the system prompt and "
                                 "the user's input) are not sent: `summary` stands for them, or a note.")
    elided_through: int = Field(default=0, description="Messages before this index are sent with tool results and "
                                "long arguments replaced by a marker naming the journal call that keeps them.")
    summary: str | None = Field(default=None, description="The LLM's summary of the omitted messages "
                                "(strategy summarize).")
    tokens: int = Field(default=0, description="Estimated prompt tokens of the model's view after the last "
                        "compaction.")


class Crashes(Model):
    """Losses of the run's actor since its last checkpointed step: what the crash-loop limit counts."""

    count: int = Field(description="Actors lost at `step`.")
    step: int = Field(description="The step the run was at (status.step): a checkpointed step starts a new count.")
    last_error: str = Field(description="Why the last actor was lost.")


class ParentRef(Model):
    """Where a child TaskRun comes from: set by the operator when it delegates."""

    name: str = Field(description="The parent TaskRun.")
    uid: str = Field(description="The parent TaskRun's uid.")
    tool_call_id: str = Field(description="The parent's delegate call this run answers (the LLM's call id).")
    call_key: str = Field(default="", description="That call's key (its idempotencyKey in the parent's "
                                                  "toolCallHistory): unique within the parent run.")
    root_uid: str = Field(default="", description="The uid of the delegation tree's root run (the operator's "
                                                  "KUBECHAIN_MAX_RUNS_PER_TREE counts the runs under it).")
    agents: list[str] = Field(default_factory=list, description="Agents of the ancestors, root first (depth limit "
                                                                "and cycle detection).")
    traceparent: str | None = Field(default=None, description="The parent's trace context: the child's spans join "
                                                              "the parent's trace.")


class ForkOf(Model):
    """Start this run from another run's checkpoint (`kubechain fork R --at-step N`): its conversation and tool
    journal up to and including step N are copied (sealed chunks too), nothing after N; calls are never run
    again. The fork runs the source's Agent (as it is now) and is a run of its own: own uid, epoch, journal keys."""

    name: str = Field(description="The TaskRun to fork, in this namespace.")
    step: int = Field(ge=0, description="The source's step (status.step counts LLM requests) to fork at: the fork "
                      "keeps step N's reply and its calls' results, and asks the LLM for step N+1. All of step N's "
                      "calls must have finished, except its ask_human question when `input` answers it. 0: only "
                      "the system prompt and the user's input.")
    input: str | None = Field(default=None, description="The answer to step N's ask_human question, instead of "
                              "the source's (or while the source still waits for one).")


class ForkedFrom(Model):
    """Where a fork came from, pinned by the operator when it first sees the fork."""

    name: str = Field(description="The source TaskRun.")
    uid: str = Field(description="Its uid: a source replaced by a new object of the same name is not forked.")
    step: int = Field(description="The step forked at (spec.forkOf.step).")


class TaskRunSpec(RunLimits):
    task_ref: LocalObjectReference | None = Field(default=None, description="The Task this run executes (or set "
                                                                            "agentRef and userInput).")
    agent_ref: LocalObjectReference | None = Field(default=None, description="The agent, for a run without a Task "
                                                                            "(child runs of a delegation).")
    user_input: str | None = Field(default=None, description="The user's message, for a run without a Task.")
    parent: ParentRef | None = Field(default=None, description="Set on child TaskRuns: the delegating parent.")
    responses: dict[str, HumanResponse] = Field(
        default_factory=dict, description="Human replies keyed by the call's idempotencyKey (see "
                                          "status.toolCallHistory, state Waiting; `kubechain respond` finds it). "
                                          "Each call is answered once; a reply for another call, a second "
                                          "different reply or a reply to a run that is not paused is refused "
                                          "(condition ResponsesValid=False) and changes nothing.")
    cancel: bool = Field(default=False, description="Set to true to stop the run (and its child runs): it fails "
                                                    "with reason Cancelled.")
    fork_of: ForkOf | None = Field(default=None, description="Start from another run's checkpoint at a step (or set "
                                   "taskRef, or agentRef and userInput): the fork runs the source's Agent and "
                                   "continues its conversation. Cannot change.")

    @model_validator(mode="after")
    def _task_or_agent(self) -> "TaskRunSpec":
        direct = self.agent_ref is not None or bool(self.user_input)
        ways = (self.task_ref is not None) + direct + (self.fork_of is not None)
        if ways != 1 or (direct and not (self.agent_ref and self.user_input)):
            raise ValueError("set either taskRef, or both agentRef and userInput, or forkOf")
        if self.fork_of is not None and self.parent is not None:
            raise ValueError("spec.forkOf: a fork is a run of its own, not a delegated child run (spec.parent)")
        return self


# The apiserver enforces it too: exactly one way to say what to run.
TaskRunSpec.model_config["json_schema_extra"] = {"oneOf": [{"required": ["taskRef"]},
                                                           {"required": ["agentRef", "userInput"]},
                                                           {"required": ["forkOf"]}]}


class TaskRunStatus(Model):
    phase: Phase = Field(default=Phase.PENDING, description="Pending, Running, PausedForUserInput (waits for a human), "
                                                            "Delegating (waits for child runs), Completed or Failed.")
    message: str = Field(default="", description="What is happening, or why not.")
    agent: str = Field(default="", description="The agent running this TaskRun (from the Task).")
    forked_from: ForkedFrom | None = Field(default=None, description="For a fork (spec.forkOf): the source run "
                                           "(name, uid) and the step it was forked at.")
    queue_position: int | None = Field(default=None, description="While Pending for want of a slot (reason Queued): "
                                                                 "the run's place in the queue, 1 = next.")
    step: int = Field(default=0, description="Number of LLM turns taken so far.")
    context_window: list[Message] = Field(
        default_factory=list, description="The latest messages of the conversation (OpenAI chat format); older ones "
                                          "are sealed out of line (see sealedContext). `kubechain transcript` prints all of it.")
    tool_call_history: list[ToolCallRecord] = Field(
        default_factory=list, description="The latest tool calls (the write-ahead journal: arguments, state, result "
                                          "or error, timing); older finished ones are sealed out of line (see sealedContext).")
    sealed_context: SealedContext = Field(
        default_factory=lambda: SealedContext(), description="Older messages and tool calls, sealed in order into "
                                                             "ConfigMaps owned by the TaskRun: written once, never rewritten.")
    phase_history: list[PhaseTransition] = Field(default_factory=list, description="Timestamped phase transitions with reasons.")
    output: str | None = Field(default=None, description="The agent's final answer, once Completed.")
    error: str | None = Field(default=None, description="Why the run failed, once Failed.")
    usage: Usage = Field(default_factory=Usage, description="Tokens used by the run's own LLM requests.")
    cost: float | None = Field(default=None, description="What the run's own LLM requests cost (LLM.spec.pricing), "
                               "in `currency`.")
    currency: str | None = Field(default=None, description="The currency of cost and treeCost.")
    tree_usage: Usage = Field(default_factory=Usage, description="The run's tokens plus those of every run it "
                              "delegated to (their trees too), as their results were journaled.")
    tree_cost: float | None = Field(default=None, description="The same for cost (children in another currency "
                                    "are not added).")
    context: ContextState | None = Field(default=None, description="Set once the conversation was compacted to fit "
                                         "the model's context window: what the model is sent.")
    llm_retry: LLMRetry | None = Field(default=None, description="While the run rides out failed LLM requests: "
                                       "attempts, since when, and when it retries (condition LLMAvailable=False).")
    context_store_wait: ContextStoreWait | None = Field(default=None, description="While the actor waits for its "
                                                        "external context store (a write or read failed): since "
                                                        "when, until when, and why (condition "
                                                        "ContextStoreAvailable=False).")
    actor: ActorRef | None = Field(default=None, description="Where the run executes: its Ray actor.")
    crashes: Crashes | None = Field(default=None, description="Actors lost at the same step, for the crash-loop "
                                    "limit (spec.crashLoopLimit).")
    epoch: int = Field(default=0, description="Fencing number, raised each time an actor is started for this run: "
                                              "only the actor holding the current epoch may write checkpoints.")
    traceparent: str | None = Field(default=None, description="W3C trace context of the run's OpenTelemetry trace: "
                                                              "operator and actor spans of this run are its children.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions: Succeeded (Unknown "
                                        "until the run ends), RayAvailable (False while Ray cannot be reached: the run "
                                        "waits), LLMAvailable (False while it rides out failed LLM requests), ContextStoreAvailable (False while the "
                                        "actor waits for its external context store), ResponsesValid (False while a reply "
                                        "in spec.responses is refused), Stalled (True while the run cannot progress: "
                                        "its Task or Agent missing or not ready, no actor can be prepared; the "
                                        "reason says which).")


KIND = KindInfo(
    kind="TaskRun", plural="taskruns", singular="taskrun", spec=TaskRunSpec, status=TaskRunStatus,
    short_names=("tr",), description="One execution of a Task by a Ray actor.",
    columns=(PrinterColumn("Agent", ".status.agent"), PrinterColumn("Phase", ".status.phase"),
             PrinterColumn("Parent", ".spec.parent.name", description="The delegating TaskRun, for child runs."),
             PrinterColumn("Step", ".status.step", "integer"),
             PrinterColumn("Tokens", ".status.treeUsage.totalTokens", "integer",
                           description="Tokens of the run and its delegated runs."),
             PrinterColumn("Cost", ".status.treeCost", "number", description="Their cost, in status.currency."),
             PrinterColumn("Actor", ".status.actor.name", priority=1),
             PrinterColumn("Forked-From", ".status.forkedFrom.name", priority=1, description="A fork's source run."),
             AGE),
)
