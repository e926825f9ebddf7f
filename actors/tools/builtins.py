"""Builtin tools. Pure functions of their JSON arguments; no network, no eval."""
from __future__ import annotations

import ast
import json
import math
import operator
from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ToolError(Exception):
    """A failure reported to the LLM as the tool's result, never a crash of the run."""


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "log": math.log, "exp": math.exp,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 10_000  # bounds 9**9**9-style expressions that would hang the actor
_MAX_LENGTH = 1_000


def _evaluate(node: ast.AST) -> float:
    match node:
        case ast.Expression(body=body):
            return _evaluate(body)
        case ast.Constant(value=value) if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        case ast.Name(id=name) if name in _CONSTANTS:
            return _CONSTANTS[name]
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_evaluate(operand))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            lhs, rhs = _evaluate(left), _evaluate(right)
            if isinstance(op, ast.Pow) and abs(rhs) > _MAX_EXPONENT:
                raise ToolError(f"exponent {rhs} is too large")
            return _BINARY[type(op)](lhs, rhs)
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in _FUNCTIONS:
            return _FUNCTIONS[name](*(_evaluate(a) for a in args))
    raise ToolError(f"unsupported expression element: {ast.dump(node)[:80]}")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses, pi, e, sqrt() and friends."""
    if len(expression) > _MAX_LENGTH:
        raise ToolError("expression is too long")
    try:
        value = _evaluate(ast.parse(expression.strip(), mode="eval"))
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        return str(value)  # may raise too: Python caps int-to-str conversion at 4300 digits
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot evaluate {expression!r}: {exc}") from None


def current_time(timezone: str = "UTC") -> str:
    """The current date and time in an IANA time zone, ISO 8601."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}") from None
    return datetime.now(zone).isoformat(timespec="seconds")


_TEXT_OPERATIONS: dict[str, Callable[[str], Any]] = {
    "upper": str.upper, "lower": str.lower, "reverse": lambda s: s[::-1], "length": len,
    "word_count": lambda s: len(s.split()), "title": str.title,
    "json_pretty": lambda s: json.dumps(json.loads(s), indent=2, sort_keys=True)}


def text(operation: str, text: str) -> str:
    """String utilities: upper, lower, reverse, length, word_count, title, json_pretty."""
    fn = _TEXT_OPERATIONS.get(operation)
    if fn is None:
        raise ToolError(f"unknown operation {operation!r}; use one of {', '.join(_TEXT_OPERATIONS)}")
    try:
        return str(fn(text))
    except json.JSONDecodeError as exc:
        raise ToolError(f"not JSON: {exc}") from None


def echo(**arguments: Any) -> str:
    """Return the arguments as JSON: a no-op tool for tests and benchmarks."""
    return json.dumps(arguments, sort_keys=True)


BUILTINS: dict[str, Callable[..., str]] = {
    "calculator": calculator, "current_time": current_time, "text": text, "echo": echo}

