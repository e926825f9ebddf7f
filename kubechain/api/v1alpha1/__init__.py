"""kubechain.dev/v1alpha1: the API types, the single source of the CRD schemas."""
from . import agent, llm, quota, schedule, task, taskrun, tool, toolset
from .agent import AgentSpec, AgentStatus, ContextPolicy
from .conditions import ConditionType, ReadinessReason, Reason
from .common import API_VERSION, CATEGORY, GROUP, VERSION, Condition, KindInfo, LocalObjectReference, Model, SecretKeyRef
from .llm import LLMSpec, LLMStatus, Pricing, RetryPolicy
from .quota import QuotaPeriod, RunQuotaSpec, RunQuotaStatus
from .schedule import ConcurrencyPolicy, RunTemplate, TaskScheduleSpec, TaskScheduleStatus
from .task import TaskSpec, TaskStatus
from .taskrun import (ActorRef, Budget, CallState, ContextChunk, ContextState, ContextStorageRef, ContextStoreWait,
                      StoreLocation, Crashes, ForkedFrom, ForkOf, FunctionCall, HumanResponse, LLMRetry, Message, ParentRef, Phase,
                      PhaseTransition, RunLimits, SealedContext, TaskRunSpec, TaskRunStatus, ToolCall, ToolCallRecord,
                      Usage, WaitingFor)
from .tool import ToolExecution, ToolSpec, ToolStatus
from .mcp import MCPServer, MCPServerStatus, MCPToolInfo
from .toolset import InlineTool, ToolSetSpec, ToolSetStatus

KINDS: tuple[KindInfo, ...] = (llm.KIND, tool.KIND, toolset.KIND, agent.KIND, task.KIND, taskrun.KIND, schedule.KIND,
                               quota.KIND)
KIND_BY_NAME = {k.kind: k for k in KINDS}
