"""Task: a request to an agent. Launching it creates a TaskRun owned by the Task."""
# ContextStorageRef lives with RunLimits (taskrun.py): a Task's contextStorageRef is copied to its TaskRun.
from __future__ import annotations

from pydantic import Field

from .common import AGE, KindInfo, LocalObjectReference, Model, PrinterColumn
from .taskrun import RunLimits

class TaskSpec(RunLimits):
    agent_ref: LocalObjectReference = Field(description="The agent that works on the task.")
    user_input: str = Field(min_length=1, description="The user's message that starts the conversation.")
    launch_immediately: bool = Field(default=True, description="Create the TaskRun right away; false waits until it is set to true.")


class TaskStatus(Model):
    task_run_name: str = Field(default="", description="Name of the TaskRun this Task launched.")
    message: str = Field(default="", description="What the Task is waiting for, if anything.")
    phase: str = Field(default="", description="Phase of its TaskRun.")
    output: str | None = Field(default=None, description="Its TaskRun's final answer, once Completed.")
    error: str | None = Field(default=None, description="Why its TaskRun failed, once Failed.")


KIND = KindInfo(
    kind="Task", plural="tasks", singular="task", spec=TaskSpec, status=TaskStatus, short_names=("tk",),
    description="A request to an agent.",
    columns=(PrinterColumn("Agent", ".spec.agentRef.name"), PrinterColumn("TaskRun", ".status.taskRunName"),
             PrinterColumn("Phase", ".status.phase"), PrinterColumn("Output", ".status.output", priority=1),
             PrinterColumn("Input", ".spec.userInput", priority=1), AGE),
)
