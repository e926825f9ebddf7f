"""Structured logs: with KUBECHAIN_LOG_FORMAT=json (the operator's setting, handed to each actor in its RunSpec)
actor logs are one JSON object per line, with the TaskRun
and the trace they belong to (the operator's are kopf's own: `kubechain operator` passes --log-format=json).

Ray prefixes actor log lines with the actor's repr, `TaskRun(<namespace>/<name>, epoch N)`, in plain format.
Nothing logs prompts or API keys: keys travel as SecretStr, and the loop logs no message contents.
"""
from __future__ import annotations

import json
import logging

from opentelemetry import trace


class JsonFormatter(logging.Formatter):
    def __init__(self, **fields: str):
        super().__init__()
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage(), **self.fields}
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"], entry["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_actor_logging(namespace: str, name: str, json_lines: bool) -> None:
    """In an actor process: JSON lines naming the TaskRun, if asked for."""
    if not json_lines:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(taskrun=f"{namespace}/{name}"))
    logger = logging.getLogger("actors")
    logger.handlers = [handler]
    logger.propagate = False
