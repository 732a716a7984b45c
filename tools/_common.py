"""Shared helpers for the tool packs (parsing, validation and number tidying)."""

from __future__ import annotations

import math
import re
from datetime import date, datetime

from langchain_core.tools import BaseTool


def clean_number(value: float, digits: int = 12) -> float:
    """Round a float to `digits` significant digits and normalise -0.0 to 0.0."""
    if not math.isfinite(value):
        raise ValueError(f"result {value!r} is not a finite number")
    rounded = float(f"{value:.{digits}g}")
    return 0.0 if rounded == 0 else rounded


def require_finite(name: str, value: float) -> float:
    """Return `value` if finite, else raise a ValueError naming the argument."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def require_nonempty(name: str, values: list[float]) -> list[float]:
    """Return `values` if it holds at least one finite number."""
    if not values:
        raise ValueError(f"{name} must be a non-empty list of numbers, got []")
    for v in values:
        require_finite(name, v)
    return values


def parse_date(name: str, text: str) -> date:
    """Parse an ISO date (YYYY-MM-DD) or raise a ValueError naming the argument."""
    try:
        return date.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{name} must be an ISO date like 2026-01-31, got {text!r}") from None


def parse_datetime(name: str, text: str) -> datetime:
    """Parse an ISO 8601 date-time (YYYY-MM-DDTHH:MM[:SS][+HH:MM]) or raise a ValueError."""
    try:
        return datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{name} must be an ISO date-time like 2026-01-31T14:30:00, got {text!r}") from None


def pack(*tools: BaseTool) -> list[BaseTool]:
    """Return the tools as a list, each description's paragraphs collapsed onto one line each.

    Docstrings wrap over several source lines; a model (or a retrieval index) should see what the tool
    does as one clean line, and its `Example: "<request>" -> tool(arg=value)` paragraph as a line of its
    own (an agent can show that line to a model choosing between close tools).
    """
    for t in tools:
        paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", t.description))
        t.description = "\n\n".join(p for p in paragraphs if p)
    return list(tools)
