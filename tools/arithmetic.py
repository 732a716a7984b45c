"""Arithmetic pack: a safe expression calculator and small number-theory helpers."""

from __future__ import annotations

import ast
import cmath
import math
import operator
import re
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from typing import Annotated, Literal

from langchain_core.tools import BaseTool, tool

from tools._common import clean_number, pack, require_finite

MAX_EXPRESSION_CHARS = 500
_PERCENT_OF = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*%\s*of\b", re.I)  # "X% of Y" is X/100 * Y
# what people write for an operator, as Python writes it: 3×4, 12÷8, 7−2, 2^10, 5², 13!
_SIGNS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "^": "**"})
_SUPERSCRIPT = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_SUPERSCRIPT_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
_FACTORIAL = re.compile(r"(\d+(?:\.\d+)?|\([^()]*\))\s*!(?!=)")
MAX_RESULT_BITS = 4096  # integers larger than ~1233 decimal digits are refused
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 1000
MAX_PRIME_INPUT = 10**15

Number = int | float

_BINARY_OPS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _log(x: Number, base: Number = math.e) -> float:
    return math.log(x, base)


def _factorial(n: Number) -> int:
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or not 0 <= n <= MAX_FACTORIAL:
        raise ValueError(f"factorial takes a whole number from 0 to {MAX_FACTORIAL}, got {n!r}")
    return math.factorial(n)


def _python_notation(expression: str) -> str:
    """The expression with the signs people write (×, ÷, −, ^, ², 13!, "15% of") as Python writes them."""
    expression = _PERCENT_OF.sub(r"(\1/100)*", expression)  # "12.5% of 880": never a modulo
    expression = expression.translate(_SIGNS)
    expression = _SUPERSCRIPT.sub(lambda m: "**" + m.group(0).translate(_SUPERSCRIPT_DIGITS), expression)
    return _FACTORIAL.sub(r"factorial(\1)", expression)


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": _log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "floor": math.floor,
    "ceil": math.ceil,
    "radians": math.radians,
    "degrees": math.degrees,
    "hypot": math.hypot,
    "factorial": _factorial,
}

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _check_size(value: Number) -> Number:
    if isinstance(value, bool):
        raise ValueError("booleans are not numbers in this calculator")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ValueError(f"intermediate result is too large (more than {MAX_RESULT_BITS} bits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is not a finite number (overflow or invalid operation)")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponent {exponent!r} is too large; the limit is {MAX_EXPONENT}")
    too_big = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if too_big and max(int(base).bit_length(), 1) * int(exponent) > MAX_RESULT_BITS * 2:
        raise ValueError(f"{base}**{exponent} would be too large to compute safely")
    result = base**exponent
    if isinstance(result, complex):
        raise ValueError(f"{base}**{exponent} has no real value")
    return result


def _eval_node(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"only numbers are allowed, got the literal {node.value!r}")
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ValueError(f"unknown name {node.id!r}; allowed constants are {sorted(_CONSTANTS)}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval_node(node.operand)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        op = _BINARY_OPS.get(type(node.op))
        if op is None:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise ValueError("division by zero")
        return _check_size(op(left, right))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            shown = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ValueError(f"function {shown!r} is not allowed; allowed functions are {sorted(_FUNCTIONS)}")
        if node.keywords:
            raise ValueError("keyword arguments are not allowed in function calls")
        args = [_eval_node(a) for a in node.args]
        try:
            return _check_size(_FUNCTIONS[node.func.id](*args))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{node.func.id}() failed: {exc}") from None
    raise ValueError(f"unsupported syntax: {type(node).__name__} (only numbers, operators and functions)")


@tool
def calculate(
    expression: Annotated[
        str, "The expression as the request writes it, e.g. '(3 + 4)² × 2', '2^10', '13!' or 'sqrt(16)'"
    ],
) -> int | float:
    """Arithmetic on numbers: add (plus, sum, total), subtract (minus), multiply (times, product), divide,
    powers (squared, cubed), square roots, factorials, percent of, logs and trig. Returns the number one
    whole expression gives, brackets kept, such as '1234*5678', '(17 − 5) ÷ 4 + 2³' or '15% of 2340'.

    Example: "work out 6.5 percent of 1980 plus 12 squared" -> calculate(expression="6.5/100*1980 + 12**2")
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    expression = _python_notation(expression)
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"could not parse expression {expression!r}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"expression {expression!r} is nested too deeply") from None
    try:
        result = _eval_node(tree)
    except OverflowError:
        raise ValueError(f"expression {expression!r} overflowed") from None
    except RecursionError:
        raise ValueError(f"expression {expression!r} is nested too deeply") from None
    return clean_number(result) if isinstance(result, float) else result


@tool
def percent_change(
    old_value: Annotated[float, "Starting value (must not be zero)"],
    new_value: Annotated[float, "Ending value"],
) -> float:
    """Percent increase or decrease from an old value to a new one: by how many percent something grew, rose,
    fell or dropped. Returns the signed percent, e.g. 25.0 for a rise from 80 to 100.

    Example: "shares bought at 40.5 now trade at 52; gain in percent?" -> percent_change(old_value=40.5,
    new_value=52)
    """
    require_finite("old_value", old_value)
    require_finite("new_value", new_value)
    if old_value == 0:
        raise ValueError("old_value must not be 0: percent change from zero is undefined")
    return clean_number((new_value - old_value) / abs(old_value) * 100)


@tool
def percentage_of(
    part: Annotated[float, "The part amount"],
    whole: Annotated[float, "The whole amount (must not be zero)"],
) -> float:
    """What percent one number (the part) is of another (the whole), like a test score, a share or a ratio as
    a percentage. Returns part/whole*100, e.g. 30 out of 120 gives 25.0 (for 'X% of Y' use calculate).

    Example: "19 of the 25 survey replies were positive; what share is that in percent?" ->
    percentage_of(part=19, whole=25)
    """
    require_finite("part", part)
    require_finite("whole", whole)
    if whole == 0:
        raise ValueError("whole must not be 0")
    return clean_number(part / whole * 100)


@tool
def gcd_lcm(
    integers: Annotated[list[int], "Two or more integers, e.g. [12, 18, 30]"],
) -> dict[str, int]:
    """Greatest common divisor (GCD, highest common factor, HCF) and least common multiple (LCM, lowest common
    denominator) of two or more whole numbers. Returns both.

    Example: "what's the lowest common multiple of 4, 6 and 10?" -> gcd_lcm(integers=[4, 6, 10])
    """
    if not 2 <= len(integers) <= 100:
        raise ValueError(f"integers must hold between 2 and 100 values, got {len(integers)}")
    if any(abs(n) > 10**18 for n in integers):
        raise ValueError("each integer must be at most 10**18 in absolute value")
    return {"gcd": math.gcd(*integers), "lcm": math.lcm(*integers)}


@tool
def factorial(n: Annotated[int, f"Non-negative integer, at most {MAX_FACTORIAL}"]) -> int:
    """Factorial n! of a whole number, the product 1*2*...*n, e.g. the number of ways to arrange n things in a
    row. Returns the exact integer.

    Example: "how many different batting orders can 9 players make?" -> factorial(n=9)
    """
    if n < 0 or n > MAX_FACTORIAL:
        raise ValueError(f"n must be an integer between 0 and {MAX_FACTORIAL}, got {n}")
    return math.factorial(n)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in small:
        return True
    if any(n % p == 0 for p in small):
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in small:  # deterministic Miller-Rabin for n < 3.3e24
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@tool
def is_prime(n: Annotated[int, "Integer to test, at most 10**15"]) -> bool:
    """Check whether a whole number is a prime number (divisible only by 1 and itself). Returns true or false.

    Example: "is 391 a prime, or does it have factors?" -> is_prime(n=391)
    """
    if abs(n) > MAX_PRIME_INPUT:
        raise ValueError(f"n must be at most {MAX_PRIME_INPUT} in absolute value, got {n}")
    return _is_prime(n)


@tool
def prime_factors(n: Annotated[int, "Integer >= 2, at most 10**12"]) -> list[int]:
    """Prime factorization: break a whole number into the primes that multiply to it, e.g. 360 is 2*2*2*3*3*5.
    Returns the prime factors in ascending order, with repeats.

    Example: "break 1386 down into the primes that multiply to it" -> prime_factors(n=1386)
    """
    if n < 2 or n > 10**12:
        raise ValueError(f"n must be an integer between 2 and 10**12, got {n}")
    factors: list[int] = []
    for p in (2, 3):
        while n % p == 0:
            factors.append(p)
            n //= p
    f = 5
    while f * f <= n:
        for cand in (f, f + 2):
            while n % cand == 0:
                factors.append(cand)
                n //= cand
        f += 6
    if n > 1:
        factors.append(n)
    return factors


_ROUNDING = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN, "up": ROUND_CEILING, "down": ROUND_FLOOR}


@tool
def round_number(
    value: Annotated[float, "Number to round"],
    decimals: Annotated[int, "Decimal places to keep (0-15); negative rounds to tens, hundreds, ..."] = 0,
    mode: Annotated[
        Literal["half_up", "half_even", "up", "down"],
        "half_up: 2.5->3 (school rounding); half_even: banker's rounding 2.5->2; up: ceiling; down: floor",
    ] = "half_up",
) -> float:
    """Round a number to some decimal places or to the nearest whole number, ten or hundred; half up (school
    rounding), banker's rounding, or always up or down. Returns the rounded number.

    Example: "86,250 rounded to thousands" -> round_number(value=86250, decimals=-3)
    """
    require_finite("value", value)
    if not -15 <= decimals <= 15:
        raise ValueError(f"decimals must be between -15 and 15, got {decimals}")
    quantum = Decimal(1).scaleb(-decimals)
    # digits enough for any float at 15 decimals (1e308 has 309): the default 28 refused 1e300 at 2 decimals
    wide = Context(prec=400)
    return float(Decimal(repr(value)).quantize(quantum, rounding=_ROUNDING[mode], context=wide))


@tool
def combinations_count(
    n: Annotated[int, "Size of the pool of items (0-10000)"],
    k: Annotated[int, "How many items are chosen (0..n)"],
    ordered: Annotated[bool, "True counts permutations (order matters); false counts combinations"] = False,
) -> int:
    """Count the ways to choose or arrange k things out of n: combinations ('n choose k', order does not
    matter) or permutations (order matters). Returns the count.

    Example: "a committee of 4 from 15 members: how many choices?" -> combinations_count(n=15, k=4)
    """
    if not 0 <= n <= 10_000:
        raise ValueError(f"n must be between 0 and 10000, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n={n}, got {k}")
    count = math.perm(n, k) if ordered else math.comb(n, k)
    if count.bit_length() > 12_000:
        raise ValueError(f"the count for n={n}, k={k} has more than 3600 digits; use a smaller n or k")
    return count


@tool
def solve_quadratic(
    a: Annotated[float, "Coefficient of x squared (non-zero)"],
    b: Annotated[float, "Coefficient of x"],
    c: Annotated[float, "Constant term"],
) -> dict[str, float | str | list[float | str]]:
    """Solve a quadratic equation a*x^2 + b*x + c = 0 for x (its roots, the zeros of a parabola). Returns the
    discriminant and the real or complex roots.

    Example: "where does y = x^2 + 4x - 21 cross zero?" -> solve_quadratic(a=1, b=4, c=-21)
    """
    for name, v in (("a", a), ("b", b), ("c", c)):
        require_finite(name, v)
    if a == 0:
        raise ValueError("a must not be 0 (that is a linear equation, not a quadratic)")
    disc = b * b - 4 * a * c
    if disc >= 0:
        # q = -(b + sign(b)*sqrt(disc))/2 adds numbers of one sign: the textbook -b + sqrt(disc) cancels
        # to a few correct digits when b*b dwarfs 4ac (x^2 + 253690x + 1 lost five digits of its small root)
        q = -(b + math.copysign(math.sqrt(disc), b)) / 2
        real_roots = {clean_number(q / a), clean_number(c / q if q else 0.0)}
        roots: list[float | str] = sorted(real_roots)
        kind = "real"
    else:
        z = cmath.sqrt(disc)
        pair = ((-b - z) / (2 * a), (-b + z) / (2 * a))
        roots = [
            f"{clean_number(w.real)}{'+' if w.imag >= 0 else '-'}{clean_number(abs(w.imag))}i" for w in pair
        ]
        kind = "complex"
    return {"discriminant": clean_number(disc), "root_type": kind, "roots": roots}


TOOLS: list[BaseTool] = pack(
    calculate,
    percent_change,
    percentage_of,
    gcd_lcm,
    factorial,
    is_prime,
    prime_factors,
    round_number,
    combinations_count,
    solve_quadratic,
)
