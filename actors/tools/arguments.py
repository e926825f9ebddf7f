"""The LLM's arguments for a call: parsed, and checked against the tool's JSON Schema before anything runs.

A failure is the LLM's to read (a tool error naming the field), so it can correct the call. Patterns are
matched by RE2 in linear time (kubechain/core/patterns.py), never by `re`; the whole check runs off the event
loop with a time limit (actors/tools/offload.py).
"""
from __future__ import annotations

import json
from typing import Any

from kubechain.core.patterns import UnsafePattern, search

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


def _matches(pattern: str, text: str) -> tuple[bool, str | None]:
    """(matched, why it cannot be matched): a pattern RE2 refuses, or a text too long, fails the check."""
    try:
        return search(pattern, text), None
    except UnsafePattern as exc:
        return False, str(exc)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string"):
        matched, problem = _matches(pattern, instance)
        if problem:
            yield ValidationError(f"cannot be matched against pattern {pattern!r}: it {problem}"[:500])
        elif not matched:
            yield ValidationError(f"{instance[:200]!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Any:
    if validator.is_type(instance, "object"):
        for pattern, subschema in patterns.items():
            for key, value in instance.items():
                if _matches(pattern, key)[0]:
                    yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: dict[str, Any]) -> Any:
    """jsonschema's own, with the patternProperties matched by RE2."""
    from jsonschema import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    extras = sorted(k for k in instance if k not in properties and not any(_matches(p, k)[0] for p in patterns))
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        joined, verb = ", ".join(map(repr, extras)), "was" if len(extras) == 1 else "were"
        if patterns:
            yield ValidationError(f"{joined} {'does' if len(extras) == 1 else 'do'} not match any of the regexes: "
                                  f"{', '.join(map(repr, sorted(patterns)))}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({joined} {verb} unexpected)")


def _validator(schema: dict[str, Any]) -> Any:
    compiled = _validators.get(id(schema))
    if compiled is None or compiled.schema is not schema:
        import jsonschema  # only once a tool with arguments is called: actors that never call one skip the import

        base = jsonschema.validators.validator_for(schema)
        linear = jsonschema.validators.extend(base, {"pattern": _pattern, "patternProperties": _pattern_properties,
                                                     "additionalProperties": _additional_properties})
        compiled = _validators[id(schema)] = linear(schema)
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
