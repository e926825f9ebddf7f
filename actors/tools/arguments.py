"""The LLM's arguments for a call: parsed, and checked against the tool's JSON Schema before anything runs.

A failure is the LLM's to read (a tool error naming the field), so it can correct the call.
"""
from __future__ import annotations

import json
from typing import Any

_validators: dict[int, Any] = {}  # by id of the schema dict: every tool's schema is compiled once per actor


def parse_arguments(arguments: str) -> tuple[dict[str, Any], str | None]:
    """The LLM's arguments as a dict, or the error the LLM should read."""
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(args, dict):
        return {}, "arguments must be a JSON object"
    return args, None


def _validator(schema: dict[str, Any]) -> Any:
    compiled = _validators.get(id(schema))
    if compiled is None or compiled.schema is not schema:
        import jsonschema  # only once a tool with arguments is called: actors that never call one skip the import

        compiled = _validators[id(schema)] = jsonschema.validators.validator_for(schema)(schema)
    return compiled


def _where(error: Any) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    if error.validator == "required":  # the missing field is named in the message, not the path
        return path or "arguments"
    return f"argument {path!r}" if path else "arguments"


def check_arguments(arguments: str, schema: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(arguments, None) if they parse and match `schema`, else ({}, the errors for the LLM)."""
    args, error = parse_arguments(arguments)
    if error is not None or schema == {"type": "object", "properties": {}}:  # nothing to check
        return args, error
    errors = sorted(_validator(schema).iter_errors(args), key=lambda e: list(e.absolute_path))
    if not errors:
        return args, None
    listed = "; ".join(f"{_where(e)}: {e.message}" for e in errors[:5])
    return {}, f"invalid arguments (schema check): {listed}"
