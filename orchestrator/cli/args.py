"""The `orch` options' value types: each checks one kind of value, once, for every option that takes it.

argparse calls them on the text given; an `ArgumentTypeError` becomes its one-line usage error naming the
option and the value (`orch run: error: argument --max-steps: got '0'; give a whole number, 1 or more`)
and exit code 2, before any command starts.

| type                 | takes                                   | e.g. options                           |
|----------------------|-----------------------------------------|----------------------------------------|
| `positive_int`       | 1, 2, ...                               | --max-steps, --limit, --last, --k      |
| `non_negative_int`   | 0, 1, ...                               | --budget-tokens                        |
| `non_negative_float` | a finite number, 0 or more              | --budget-usd, --temperature            |
| `fraction_0_1`       | a finite number from 0 to 1             | --min-accuracy                         |
| `non_empty_str`      | text that is not empty or only spaces   | --run-id, --resume, run ids, paths     |
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "fraction_0_1",
    "non_empty_str",
    "non_negative_float",
    "non_negative_int",
    "positive_int",
]


def _bad(text: str, what: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"got {text!r}; give {what}")


def _int(text: str, least: int, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise _bad(text, what) from None
    if value < least:
        raise _bad(text, what)
    return value


def _float(text: str, what: str, least: float = -math.inf, most: float = math.inf) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(text, what) from None
    if not math.isfinite(value) or not least <= value <= most:  # nan and inf too: no option means them
        raise _bad(text, what)
    return value


def positive_int(text: str) -> int:
    """A whole number, 1 or more (a count of steps, rows, runs, tools)."""
    return _int(text, 1, "a whole number, 1 or more")


def non_negative_int(text: str) -> int:
    """A whole number, 0 or more (a token budget)."""
    return _int(text, 0, "a whole number, 0 or more")


def non_negative_float(text: str) -> float:
    """A finite number, 0 or more (dollars, seconds, a temperature)."""
    return _float(text, "a finite number, 0 or more", least=0.0)


def fraction_0_1(text: str) -> float:
    """A share from 0 to 1 (0.9 is 90%)."""
    return _float(text, "a share from 0 to 1, e.g. 0.9 for 90%", least=0.0, most=1.0)


def non_empty_str(text: str) -> str:
    """Text that is not empty or only spaces (an id, a name, a path: empty silently meant the default)."""
    if not text.strip():
        raise _bad(text, "a non-empty value")
    return text
