"""Tests for the arithmetic pack, called through the langchain tool interface."""

import pytest

from tools.arithmetic import (
    calculate,
    combinations_count,
    factorial,
    gcd_lcm,
    is_prime,
    percent_change,
    percentage_of,
    prime_factors,
    round_number,
    solve_quadratic,
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2*(3+4)**2", 98),
        ("-3 + 10 // 3", 0),
        ("7 % 4 + 2**10", 1027),
        ("1/4", 0.25),
        ("0.1 + 0.2", 0.3),
        ("sqrt(16) + abs(-2)", 6.0),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("log(100, 10)", 2.0),
        ("round(2 * pi, 2)", 6.28),
        ("-(-2) ** 2", -4),
        ("cos(0) + sin(0)", 1.0),
        ("12.5% of 880", 110),  # a percentage, where "%" alone is a modulo
        ("20 % OF (50 + 50) + 7 % 4", 23),
    ],
)
def test_calculate_evaluates_arithmetic(expression: str, expected: float) -> None:
    assert calculate.invoke({"expression": expression}) == pytest.approx(expected)


def test_calculate_keeps_integer_results_exact() -> None:
    result = calculate.invoke({"expression": "2**100"})
    assert result == 1267650600228229401496703205376
    assert isinstance(result, int)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "not allowed"),
        ("(1).real", "Attribute"),
        ("().__class__", "Attribute"),
        ("open('x')", "not allowed"),
        ("x + 1", "unknown name"),
        ("'a' * 3", "only numbers"),
        ("[1, 2]", "unsupported syntax"),
        ("lambda: 1", "unsupported syntax"),
        ("9**99999", "too large"),
        ("2**5000", "too large"),
        ("10.0**400", "overflowed"),
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("sqrt(-1)", "sqrt"),
        ("2 +", "could not parse"),
        ("1 < 2", "unsupported syntax"),
        ("True + 1", "only numbers"),
        ("1" * 600, "limit"),
    ],
)
def test_calculate_refuses_unsafe_or_invalid_input(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calculate.invoke({"expression": expression})


def test_calculate_refuses_deep_nesting() -> None:
    with pytest.raises(ValueError):
        calculate.invoke({"expression": "(" * 240 + "1" + ")" * 240})


def test_percent_change() -> None:
    assert percent_change.invoke({"old_value": 80, "new_value": 100}) == 25.0
    assert percent_change.invoke({"old_value": 200, "new_value": 150}) == -25.0
    assert percent_change.invoke({"old_value": -50, "new_value": -25}) == 50.0
    with pytest.raises(ValueError, match="old_value must not be 0"):
        percent_change.invoke({"old_value": 0, "new_value": 5})


def test_percentage_of() -> None:
    assert percentage_of.invoke({"part": 30, "whole": 120}) == 25.0
    assert percentage_of.invoke({"part": 1, "whole": 3}) == pytest.approx(33.3333333333)
    with pytest.raises(ValueError, match="whole"):
        percentage_of.invoke({"part": 1, "whole": 0})


def test_gcd_lcm() -> None:
    assert gcd_lcm.invoke({"integers": [12, 18, 30]}) == {"gcd": 6, "lcm": 180}
    assert gcd_lcm.invoke({"integers": [7, 5]}) == {"gcd": 1, "lcm": 35}
    with pytest.raises(ValueError, match="between 2 and 100 values"):
        gcd_lcm.invoke({"integers": [4]})


def test_factorial() -> None:
    assert factorial.invoke({"n": 0}) == 1
    assert factorial.invoke({"n": 10}) == 3628800
    with pytest.raises(ValueError, match="between 0 and 1000"):
        factorial.invoke({"n": 1001})
    with pytest.raises(ValueError, match="got -1"):
        factorial.invoke({"n": -1})


def test_is_prime() -> None:
    primes = [n for n in range(30) if is_prime.invoke({"n": n})]
    assert primes == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime.invoke({"n": 1_000_000_007}) is True
    assert is_prime.invoke({"n": 999_999_999_999_999}) is False
    assert is_prime.invoke({"n": 561}) is False  # Carmichael number
    with pytest.raises(ValueError, match="at most"):
        is_prime.invoke({"n": 10**16})


def test_prime_factors() -> None:
    assert prime_factors.invoke({"n": 360}) == [2, 2, 2, 3, 3, 5]
    assert prime_factors.invoke({"n": 97}) == [97]
    assert prime_factors.invoke({"n": 1_000_000_007 * 2}) == [2, 1_000_000_007]
    with pytest.raises(ValueError, match="between 2"):
        prime_factors.invoke({"n": 1})


def test_round_number_modes() -> None:
    assert round_number.invoke({"value": 2.5}) == 3.0
    assert round_number.invoke({"value": 2.5, "mode": "half_even"}) == 2.0
    assert round_number.invoke({"value": 2.675, "decimals": 2}) == 2.68
    assert round_number.invoke({"value": 1.21, "decimals": 1, "mode": "up"}) == 1.3
    assert round_number.invoke({"value": -1.21, "decimals": 1, "mode": "down"}) == -1.3
    assert round_number.invoke({"value": 1234.5, "decimals": -2}) == 1200.0
    with pytest.raises(ValueError, match="decimals"):
        round_number.invoke({"value": 1.0, "decimals": 20})


def test_combinations_count() -> None:
    assert combinations_count.invoke({"n": 5, "k": 2}) == 10
    assert combinations_count.invoke({"n": 5, "k": 2, "ordered": True}) == 20
    assert combinations_count.invoke({"n": 52, "k": 5}) == 2598960
    with pytest.raises(ValueError, match="more than 3600 digits"):
        combinations_count.invoke({"n": 10000, "k": 10000, "ordered": True})
    with pytest.raises(ValueError, match="k must be between 0 and n=3"):
        combinations_count.invoke({"n": 3, "k": 4})


def test_solve_quadratic() -> None:
    real = solve_quadratic.invoke({"a": 1, "b": -3, "c": 2})
    assert real == {"discriminant": 1.0, "root_type": "real", "roots": [1.0, 2.0]}
    double = solve_quadratic.invoke({"a": 1, "b": 2, "c": 1})
    assert double["roots"] == [-1.0]
    complex_roots = solve_quadratic.invoke({"a": 1, "b": 2, "c": 5})
    assert complex_roots["root_type"] == "complex"
    assert complex_roots["roots"] == ["-1.0-2.0i", "-1.0+2.0i"]
    with pytest.raises(ValueError, match="a must not be 0"):
        solve_quadratic.invoke({"a": 0, "b": 1, "c": 1})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(17.5 × 4 − 12) ÷ 8 + 3³", 34.25),
        ("2^10", 1024),
        ("13!", 6227020800),
        ("(2 + 3)! / 4!", 5),
        ("10²·2", 200),
        ("3 – 5", -2),
    ],
)
def test_calculate_reads_the_signs_people_write(expression: str, expected: float) -> None:
    """A model copying the request's expression keeps its brackets; rewriting it into Python is where
    they got lost ('(17.5 × 4 − 12) ÷ 8' became '17.5*4-12/8')."""
    assert calculate.invoke({"expression": expression}) == pytest.approx(expected)


def test_calculate_refuses_a_factorial_it_cannot_take() -> None:
    with pytest.raises(ValueError, match="whole number"):
        calculate.invoke({"expression": "2.5!"})
