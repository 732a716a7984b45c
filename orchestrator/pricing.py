"""Tokens -> USD, best effort: an unknown price is `None` (shown as "?"), never a silent 0."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["PriceTable", "Prices", "Usage", "cost_usd"]


@dataclass(frozen=True)
class Prices:
    """USD per token, and where the figures came from."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    source: str = ""


ZERO = Prices(0.0, 0.0, 0.0, 0.0, source="local model: priced 0 by explicit entry")


@dataclass(frozen=True)
class Usage:
    """Token counts in OpenTelemetry's convention: `input_tokens` includes cached tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


def cost_usd(usage: Usage, prices: Prices | None) -> float | None:
    """Price every token once at its own rate; `None` when the price is unknown."""
    if prices is None:
        return None
    uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    read_rate = prices.input if prices.cache_read is None else prices.cache_read
    write_rate = prices.input if prices.cache_write is None else prices.cache_write
    return (
        uncached * prices.input
        + usage.cache_read_tokens * read_rate
        + usage.cache_write_tokens * write_rate
        + usage.output_tokens * prices.output
    )


class PriceTable:
    """A price table in the standard (LiteLLM) JSON layout: model key -> per-token prices."""

    def __init__(self, entries: dict[str, dict[str, Any]], source: str) -> None:
        self._entries = {k: v for k, v in entries.items() if k != "sample_spec" and isinstance(v, dict)}
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Load a user's own price file (same layout as the shipped snapshot)."""
        p = Path(path)
        return cls(json.loads(p.read_text(encoding="utf-8")), source=str(p))

    def keys(self) -> list[str]:
        """All model keys in the table."""
        return list(self._entries)

    def lookup(self, key: str) -> Prices | None:
        """Prices for one table key, or None when the key is absent or carries no token prices."""
        entry = self._entries.get(key)
        if entry is None or "input_cost_per_token" not in entry or "output_cost_per_token" not in entry:
            return None
        return Prices(
            input=float(entry["input_cost_per_token"]),
            output=float(entry["output_cost_per_token"]),
            cache_read=_opt(entry.get("cache_read_input_token_cost")),
            cache_write=_opt(entry.get("cache_creation_input_token_cost")),
            source=f"{self.source}#{key}",
        )

    def context_window(self, key: str) -> int | None:
        """The model's input window, when the table knows it."""
        value = self._entries.get(key, {}).get("max_input_tokens")
        return int(value) if isinstance(value, int | float) else None


def _opt(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@cache
def shipped_table() -> PriceTable:
    """The snapshot shipped with the package (LiteLLM layout, MIT; see data/LICENSE.prices)."""
    text = resources.files("orchestrator").joinpath("data/prices.json").read_text(encoding="utf-8")
    return PriceTable(json.loads(text), source="shipped snapshot")


def warn_unpriced(model: str) -> None:
    """Warn that a model's calls carry cost `null` (Python's warning filters show it once per place)."""
    warnings.warn(
        f"no price known for model {model!r}: its cost is recorded as null ('?'); "
        "set price_as= or prices= on the slot to price it",
        UnpricedModelWarning,
        stacklevel=3,
    )


class UnpricedModelWarning(UserWarning):
    """A model with no known price was used."""
