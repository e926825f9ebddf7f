"""Argument schemas of the builtin tools, offered to the LLM when a builtin Tool declares none."""
from typing import Any

BUILTIN_ARGUMENTS: dict[str, dict[str, Any]] = {
    "calculator": {"type": "object", "required": ["expression"],
                   "properties": {"expression": {"type": "string", "description": "Arithmetic, e.g. (2+3)*4"}}},
    "current_time": {"type": "object",
                     "properties": {"timezone": {"type": "string", "description": "IANA time zone, default UTC"}}},
    "text": {"type": "object", "required": ["operation", "text"],
             "properties": {"operation": {"type": "string", "enum": ["upper", "lower", "reverse", "length",
                                                                     "word_count", "title", "json_pretty"]},
                            "text": {"type": "string"}}},
    "echo": {"type": "object", "properties": {}, "additionalProperties": True},
    "ask_human": {"type": "object", "required": ["question"],
                  "properties": {"question": {"type": "string", "description": "What to ask the human"}}},
}
DELEGATE_ARGUMENTS: dict[str, Any] = {
    "type": "object", "required": ["message"],
    "properties": {"message": {"type": "string", "description": "The task for the other agent, self-contained"}}}
