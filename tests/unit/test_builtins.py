import json

import pytest

from actors.tools.builtins import ToolError, calculator, current_time, echo, text


@pytest.mark.parametrize("expression, expected", [
    ("2+2", "4"), ("(2+3)*4", "20"), ("7/2", "3.5"), ("2**10", "1024"), ("-3 + 5 % 3", "-1"),
    ("sqrt(16) + abs(-2)", "6"), ("round(pi, 2)", "3.14"), ("10 // 3", "3"),
])
def test_calculator(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize("expression, error", [
    ("__import__('os').system('id')", "unsupported"), ("open('/etc/passwd')", "unsupported"),
    ("1/0", "cannot evaluate"), ("2 +", "not an arithmetic expression"), ("9**9**9", "too large"),
    ("x + 1", "unsupported"), ("'a' * 3", "unsupported"), ("1" * 2000, "too long"),
    ("9**9999", "has about 9,542 digits; the calculator shows at most 4,300"),
    # the bombs: refused from an estimate of the result's size, before anything is computed
    ("(9**9999)**999", "result too large: this power would have about 31,664,384 bits; the calculator computes "
                       "integers of at most 65,536 bits"),
    ("(9**9999)**3000", "result too large"), ("(2**40000)*(2**40000)", "this product would have about 80,002 bits"),
    ("round(5, -10**9)", "at most 1000 digits"), ("2.0**1e6", "cannot evaluate"),
])
def test_calculator_refuses(expression, error):
    with pytest.raises(ToolError, match=error):
        calculator(expression)


@pytest.mark.parametrize("expression, expected", [
    ("2**65536 % 1000", "736"), ("9**9999 % 1000", "889"), ("0**100000", "0"), ("(-1)**(10**9)", "1"),
    ("2**-3", "0.125"), ("10**4299 // 10**4298", "10"),
])
def test_calculator_computes_up_to_the_bound(expression, expected):
    assert calculator(expression) == expected


def test_current_time():
    assert current_time("UTC").endswith("+00:00")
    with pytest.raises(ToolError, match="unknown time zone"):
        current_time("Mars/Olympus")


def test_text_and_echo():
    assert text("upper", "abc") == "ABC"
    assert text("word_count", "a b  c") == "3"
    assert json.loads(text("json_pretty", '{"b":1,"a":2}')) == {"a": 2, "b": 1}
    with pytest.raises(ToolError, match="unknown operation"):
        text("explode", "x")
    assert json.loads(echo(a=1, b="x")) == {"a": 1, "b": "x"}
