"""JSON Schema `pattern`s matched in linear time (RE2), and the schemas whose patterns cannot be.

Why RE2 and not Python's `re`: `re` backtracks. `(a+)+$` against 29 characters took 33.7 s, in one C call that
holds the GIL, so neither a thread nor an asyncio timeout can interrupt it: a Tool's schema could wedge its
actor. RE2 (google-re2, the bindings Google maintains) matches in time linear in the text for every pattern it
accepts. What it does not accept (lookaround, backreferences, `\\Z`, repetitions over {1000}) a Tool's or an MCP
tool's schema may not use: the Tool (or ToolSet) is not Ready, and the webhook refuses it, naming the field.

Where patterns are matched: `pattern` (strings) and `patternProperties` (property names), in the actor's argument
check (actors/tools/arguments.py) and nowhere else. `unevaluatedProperties` beside `patternProperties` is refused:
jsonschema would match those patterns with `re` itself.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import re2

MAX_MATCHED_CHARS = 100_000
"""Longest string (or property name) a pattern is matched against: a longer one fails the check. RE2 is linear,
but a large pattern runs on its slower NFA: ~0.1 s per 100,000 characters in the worst case measured."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is our message to write, not a line on stderr
_OPTIONS.never_capture = True  # only whether it matches

# Keywords whose value is a subschema, a list of them, or a map of them (draft 4 to 2020-12).
_SUBSCHEMA = ("additionalProperties", "unevaluatedProperties", "propertyNames", "items", "additionalItems",
              "unevaluatedItems", "contains", "not", "if", "then", "else")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


class UnsafePattern(ValueError):
    """A pattern RE2 does not accept."""


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    """RE2's program for `pattern` (cached: every call of a tool matches the same few), else UnsafePattern."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise UnsafePattern(f"{detail} (patterns are matched by RE2, in linear time: no lookaround, "
                            "backreferences or repetitions over {1000})") from None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text` (JSON Schema's semantics), in time linear in `text`."""
    if len(text) > MAX_MATCHED_CHARS:
        raise UnsafePattern(f"is longer than {MAX_MATCHED_CHARS:,} characters, the most a pattern is matched "
                            "against")
    return compiled(pattern).search(text) is not None


def _patterns(schema: Any, where: str) -> Iterator[tuple[str, str]]:
    """(where, pattern) of every pattern in a schema, `where` as a dotted path from the schema's root."""
    if not isinstance(schema, dict):
        return
    if isinstance(schema.get("pattern"), str):
        yield f"{where}.pattern", schema["pattern"]
    if isinstance(schema.get("patternProperties"), dict):
        yield from ((f"{where}.patternProperties[{p!r}]", p) for p in schema["patternProperties"])
    for key in _SUBSCHEMA:
        if isinstance(schema.get(key), dict):
            yield from _patterns(schema[key], f"{where}.{key}")
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield from _patterns(sub, f"{where}.{key}[{i}]")
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield from _patterns(sub, f"{where}.{key}.{name}")


def _unevaluated(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "unevaluatedProperties" in schema or any(_unevaluated(v) for v in schema.values())
    return isinstance(schema, list) and any(_unevaluated(v) for v in schema)


def pattern_problem(schema: Any, where: str) -> str | None:
    """Why `schema` (found at `where`, e.g. `arguments`) has a pattern that cannot be matched safely, or None."""
    found = list(_patterns(schema, where))
    for path, pattern in found:
        try:
            compiled(pattern)
        except UnsafePattern as exc:
            return f"{path} {pattern!r} is refused: {exc}"
    if any("patternProperties" in path for path, _ in found) and _unevaluated(schema):
        return (f"{where}: patternProperties cannot be combined with unevaluatedProperties (those patterns would "
                "be matched by a backtracking engine)")
    return None
