"""Builtin tools. Pure functions of their JSON arguments; no network, no eval.

Each call's work is bounded by its input: an over-limit request is refused (a ToolError naming the limit) before
the work starts. That matters because a single big-integer operation is one C call that holds the GIL: the time
limit the executor puts on a call (actors/tools/offload.py) cannot interrupt it, only stop waiting for it.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import sys
from datetime import datetime
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ToolError(Exception):
    """A failure reported to the LLM as the tool's result, never a crash of the run."""


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_LENGTH = 1_000
# Integers the calculator computes, intermediate results included: 65,536 bits (about 19,700 digits) multiply or
# divide in well under a millisecond. (9**9999)**999 (31 million bits) took 11.6 s in one uninterruptible call.
MAX_RESULT_BITS = 1 << 16
_SHOWN_DIGITS = sys.get_int_max_str_digits() or 4300  # Python's cap on int-to-str conversion
_MAX_ROUND_DIGITS = 1_000  # round(5, -10**9) would compute 10**(10**9)


def _bounded(op: ast.operator, lhs: float, rhs: float) -> None:
    """Refuse an integer power or product whose result would exceed MAX_RESULT_BITS, before computing it."""
    if not (isinstance(lhs, int) and isinstance(rhs, int)):
        return  # a float result overflows at once (OverflowError), whatever the operands
    if isinstance(op, ast.Pow) and rhs > 0 and abs(lhs) > 1:
        bits = rhs * math.log2(abs(lhs))
    elif isinstance(op, ast.Mult):
        bits = lhs.bit_length() + rhs.bit_length()
    else:
        return
    if bits > MAX_RESULT_BITS:
        what = "power" if isinstance(op, ast.Pow) else "product"
        raise ToolError(f"result too large: this {what} would have about {bits:,.0f} bits; the calculator computes "
                        f"integers of at most {MAX_RESULT_BITS:,} bits (about {int(MAX_RESULT_BITS * math.log10(2)):,} "
                        "digits)")


def _round(number: float, ndigits: int | None = None) -> float:
    if isinstance(ndigits, int) and abs(ndigits) > _MAX_ROUND_DIGITS:
        raise ToolError(f"round() takes at most {_MAX_ROUND_DIGITS} digits")
    return round(number, ndigits)


_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt, "abs": abs, "round": _round, "min": min, "max": max, "log": math.log, "exp": math.exp,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil}


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
            _bounded(op, lhs, rhs)
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
        if isinstance(value, int) and value.bit_length() > _SHOWN_DIGITS * math.log2(10) + 1:
            raise ToolError(f"the result has about {int(value.bit_length() * math.log10(2)) + 1:,} digits; the "
                            f"calculator shows at most {_SHOWN_DIGITS:,}")
        return str(value)  # at most a few digits over the cap get here: Python's own error says so
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

