"""Condition types and reasons: the words kubechain writes into conditions, phase transitions and Events.

Types only. A reason is CamelCase (Kubernetes' convention) and says what happened, not what to do; the
message beside it says the rest. `kubectl wait --for=condition=Succeeded` and alerts on Event reasons
depend on these spellings: they are API.
"""
from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"                    # LLM, Tool, ToolSet, Agent: usable, every dependency ready
    SUCCEEDED = "Succeeded"            # TaskRun: Unknown until it ends, then True (Completed) or False (Failed)
    RAY_AVAILABLE = "RayAvailable"     # TaskRun while Running: False while Ray cannot be reached (the run waits)
    LLM_AVAILABLE = "LLMAvailable"     # TaskRun: False while it rides out failed LLM requests (status.llmRetry)
    CONTEXT_STORE_AVAILABLE = "ContextStoreAvailable"  # TaskRun: False while its actor waits for the external
                                                        # context store (status.contextStoreWait)
    RESPONSES_VALID = "ResponsesValid"  # TaskRun: False while spec.responses holds a reply that is refused
    STALLED = "Stalled"                # TaskRun: True while it cannot progress (kstatus' word), False again once it does


class Reason(StrEnum):
    """Why a TaskRun changed phase (phaseHistory, condition Succeeded), and the Events about it."""

    # Pending -> Running (operator)
    SCHEDULED = "Scheduled"                # a slot was free and the Agent ready: an actor is started
    # Running -> ... (the actor)
    FINAL_ANSWER = "FinalAnswer"           # -> Completed
    WAITING_FOR_INPUT = "WaitingForInput"  # -> PausedForUserInput: an ask_human call or a call to approve
    DELEGATED = "Delegated"                # -> Delegating: delegate calls (child runs) or container calls (Jobs);
                                           #    also the Event of each child TaskRun created
    LLM_ERROR = "LLMError"                 # -> Failed: LLM requests kept failing past LLM.spec.retry
    UNAUTHORIZED = "Unauthorized"          # -> Failed: the provider refused the key (401/403); not retried
    MODEL_NOT_FOUND = "ModelNotFound"      # -> Failed: the provider does not know the model (404); not retried
    LLM_REJECTED = "LLMRejected"           # -> Failed: the provider refused the request (other 4xx); not retried
    OUTPUT_TRUNCATED = "OutputTruncated"   # -> Failed: the final answer was cut off at the token limit
    CONTEXT_LENGTH_EXCEEDED = "ContextLengthExceeded"  # -> Failed: the conversation outgrew the model's window and
                                           #    could not be compacted further (or Agent.spec.context is none)
    MAX_TURNS_EXCEEDED = "MaxTurnsExceeded"  # -> Failed: spec.maxTurns LLM requests were made
    BUDGET_EXCEEDED = "BudgetExceeded"  # -> Failed: the tree's spec.budget is spent (checked before each request)
    INTERNAL_ERROR = "InternalError"       # -> Failed: a bug or a broken store in the actor
    CHECKPOINT_CORRUPT = "CheckpointCorrupt"  # -> Failed: a sealed chunk is missing or does not match its checksum
    STORAGE_QUOTA_EXCEEDED = "StorageQuotaExceeded"  # -> Failed: the next checkpoint would take the run past its
                                           #    share of its namespace's storage cap in the apiserver
    CONTEXT_STORE_UNAVAILABLE = "ContextStoreUnavailable"  # -> Failed: the external context store stayed away past
                                           #    KUBECHAIN_CONTEXT_STORE_WAIT_SECONDS; also the Warning Event and the
                                           #    reason of ContextStoreAvailable=False while the actor waits for it
    CONTEXT_STORE_RECOVERED = "ContextStoreRecovered"  # Event: the store answers again; ContextStoreAvailable=True
    CONTEXT_MOVED = "ContextMoved"         # Event: at its storage allowance, the run moved its chunks to the store
    # Running -> Failed (operator)
    CRASH_LOOP = "CrashLoop"               # spec.crashLoopLimit actors were lost at one step
    # PausedForUserInput / Delegating -> Running (operator)
    INPUT_RECEIVED = "InputReceived"       # every waiting call has an answer or a decision
    CHILDREN_FINISHED = "ChildrenFinished"  # every delegated child run ended
    JOBS_FINISHED = "JobsFinished"         # every container call's Job finished
    # any phase not ended -> Failed (operator)
    CANCELLED = "Cancelled"                # spec.cancel became true
    TIMEOUT = "Timeout"                    # spec.timeoutSeconds passed since the run first entered Running (or,
                                           #    for a run that never started, since its creation)
    # Pending / Running -> Failed (operator): what the run waits for can never come
    AGENT_NOT_FOUND = "AgentNotFound"      # a child run's Agent does not exist (a top-level run waits: condition)
    SECRET_NOT_FOUND = "SecretNotFound"    # a Secret (key) the run's LLM or tools need does not exist
    FORK_FAILED = "ForkFailed"             # a fork's source is gone, replaced, or cannot be cut at forkOf.step
                                           #    (also the actor's, when it copies the source's checkpoint)
    # Condition Stalled=True while a run cannot progress (with status.message and one Warning Event)
    TASK_NOT_FOUND = "TaskNotFound"        # Pending: the run's Task does not exist
    AGENT_NOT_READY = "AgentNotReady"      # Pending: the Agent is not ready (its message says why)
    CANNOT_START = "CannotStart"           # Running: no actor can be prepared now (its Agent not ready...)

    # Events only (no phase change)
    ACTOR_STARTED = "ActorStarted"         # the run's first actor
    ACTOR_RESUMED = "ActorResumed"         # a new actor for a run that was resumed after waiting (not a crash)
    ACTOR_RESTARTED = "ActorRestarted"     # a new actor after the last one was lost (a crash recovery)
    ACTOR_ATTACHED = "ActorAttached"       # the operator (restarted) found the run's live actor and supervises it
    ACTOR_LOST = "ActorLost"               # the actor's process went away before its run ended
    ACTOR_WEDGED = "ActorWedged"           # the actor stopped answering liveness pings (its event loop is blocked)
    ACTOR_QUEUED = "ActorQueued"           # no free pooled actor nor actor start (KUBECHAIN_MAX_ACTOR_STARTS): waits in line
    FORKED = "Forked"                      # a fork pinned its source (operator), then copied its checkpoint (actor)
    CONTEXT_COMPACTED = "ContextCompacted"  # what the model sees was compacted to fit its context window
    CONTEXT_DROPPED = "ContextDropped"     # an ended run's sealed chunks were deleted (contextRetentionSeconds)
    RAY_UNAVAILABLE = "RayUnavailable"     # Ray cannot be reached: the run stays Running and waits for it
    TOOL_JOB_CREATED = "ToolJobCreated"    # a container call's Job was created
    RESPONSE_REFUSED = "ResponseRefused"   # a reply in spec.responses was refused (condition ResponsesValid)

    LLM_RECOVERED = "LLMRecovered"         # the LLM answered again after failed requests

    # Condition reasons
    RATE_LIMITED = "RateLimited"           # LLMAvailable=False: 429 (also an Event, once per episode)
    SERVER_ERROR = "ServerError"           # LLMAvailable=False: 5xx, 408, 409
    ANSWERING = "Answering"                # LLMAvailable=True
    CONNECTED = "Connected"                # RayAvailable=True
    UNREACHABLE = "Unreachable"            # RayAvailable=False; LLMAvailable=False: no answer (connection, timeout)
    ACCEPTED = "Accepted"                  # ResponsesValid=True
    REFUSED = "Refused"                    # ResponsesValid=False
    PROGRESSING = "Progressing"            # Stalled=False: what held the run is resolved

    @property
    def resumes(self) -> bool:
        """A waiting run went back to Running: its next actor is a resumption, not a recovery."""
        return self in (Reason.INPUT_RECEIVED, Reason.CHILDREN_FINISHED, Reason.JOBS_FINISHED)


class ReadinessReason(StrEnum):
    """Reasons of the Ready condition of LLM, Tool, ToolSet and Agent (and the Events when it flips)."""

    READY = "Ready"
    INVALID_SPEC = "InvalidSpec"              # the spec passed the schema but not the rules across fields
    SECRET_NOT_FOUND = "SecretNotFound"       # LLM: the API key's Secret or key is missing
    UNAUTHORIZED = "Unauthorized"             # LLM: the provider refused the API key (401/403)
    MODEL_NOT_FOUND = "ModelNotFound"         # LLM: the provider does not serve the model
    UNREACHABLE = "Unreachable"               # LLM: the provider did not answer (no connection, timeout, 5xx, 429)
    INVALID_TOOL = "InvalidTool"              # a tool's arguments schema is not a valid JSON Schema object
    DUPLICATE_TOOL = "DuplicateTool"          # two tools would reach the LLM under one name
    DEPENDENCY_PENDING = "DependencyPending"  # a referenced object is not reconciled yet (start-up: no Event)
    LLM_NOT_FOUND = "LLMNotFound"
    LLM_NOT_READY = "LLMNotReady"
    TOOL_NOT_FOUND = "ToolNotFound"
    TOOL_NOT_READY = "ToolNotReady"
    TOOLSET_NOT_FOUND = "ToolSetNotFound"
    TOOLSET_NOT_READY = "ToolSetNotReady"
    MCP_DISCOVERY_PENDING = "MCPDiscoveryPending"  # an MCP server's tools are being listed (start-up: no Event)
    MCP_SERVER_FAILED = "MCPServerFailed"     # an MCP server could not be reached or listed
    DELEGATE_NOT_FOUND = "DelegateNotFound"   # Agent: a delegate tool names an Agent that does not exist

    @property
    def transient(self) -> bool:
        """Only a moment of start-up, not a problem worth a Warning Event."""
        return self in (ReadinessReason.DEPENDENCY_PENDING, ReadinessReason.MCP_DISCOVERY_PENDING)

    @property
    def retried(self) -> bool:
        """LLM: not a verdict on the key or the model (the provider did not answer): asked again soon, backing off."""
        return self is ReadinessReason.UNREACHABLE
