"""Tokens -> USD, exactly: every token once, at its own rate; an unknown price is `None`, never a silent 0.

Usage is kept in OpenTelemetry's convention (`input_tokens` includes cached tokens); each provider client
converts its own convention into it (OpenAI's `prompt_tokens` already includes cached tokens, Anthropic's
`input_tokens` excludes cache reads and writes).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["PriceTable", "Prices", "Tier", "Usage", "cost_usd"]


@dataclass(frozen=True)
class Tier:
    """Rates that apply to a whole request whose prompt is above `above_tokens` (e.g. 200k)."""

    above_tokens: int
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None


@dataclass(frozen=True)
class Prices:
    """USD per token, and where the figures came from.

    `cache_write` is the 5-minute cache-write rate, `cache_write_1h` the 1-hour one. A missing cache rate
    falls back to the input rate (what a provider without a cache discount charges).
    """

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    tiers: tuple[Tier, ...] = field(default=())
    source: str = ""

    def at(self, prompt_tokens: int) -> Prices:
        """The rates for a request with this many prompt tokens (cached included): its highest tier."""
        chosen: Tier | None = None
        for tier in self.tiers:
            if prompt_tokens > tier.above_tokens and (
                chosen is None or tier.above_tokens > chosen.above_tokens
            ):
                chosen = tier
        if chosen is None:
            return self
        return replace(
            self,
            input=chosen.input,
            output=chosen.output,
            cache_read=chosen.cache_read if chosen.cache_read is not None else self.cache_read,
            cache_write=chosen.cache_write if chosen.cache_write is not None else self.cache_write,
            cache_write_1h=chosen.cache_write_1h
            if chosen.cache_write_1h is not None
            else self.cache_write_1h,
            tiers=(),
        )


ZERO = Prices(0.0, 0.0, 0.0, 0.0, 0.0, source="local model: priced 0 by explicit entry")


@dataclass(frozen=True)
class Usage:
    """Token counts in OpenTelemetry's convention.

    `input_tokens` includes cache reads and writes; `cache_write_1h_tokens` is the part of
    `cache_write_tokens` written with a 1-hour lifetime; `reasoning_tokens` is the part of `output_tokens`
    spent reasoning (billed as output, reported apart). `estimated` marks counts guessed from a stream that
    broke before the server reported usage.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`orch ask --json`, response metadata, attempts)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_creation_1h_input_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "usage_estimated": self.estimated,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        """The inverse of `to_dict` (missing counts are 0)."""
        return cls(
            input_tokens=int(d.get("input_tokens") or 0),
            output_tokens=int(d.get("output_tokens") or 0),
            cache_read_tokens=int(d.get("cache_read_input_tokens") or 0),
            cache_write_tokens=int(d.get("cache_creation_input_tokens") or 0),
            cache_write_1h_tokens=int(d.get("cache_creation_1h_input_tokens") or 0),
            reasoning_tokens=int(d.get("reasoning_tokens") or 0),
            estimated=bool(d.get("usage_estimated")),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.estimated or other.estimated,
        )


def cost_usd(usage: Usage, prices: Prices | None) -> float | None:
    """Price every token once at its own rate; `None` when the price is unknown.

    Example:
        >>> p = Prices(input=3e-6, output=15e-6, cache_read=3e-7, cache_write=3.75e-6)
        >>> round(cost_usd(Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=800), p), 8)
        0.00234
    """
    if prices is None:
        return None
    rates = prices.at(usage.input_tokens)
    write_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
    write_5m = usage.cache_write_tokens - write_1h
    uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    read_rate = rates.input if rates.cache_read is None else rates.cache_read
    write_rate = rates.input if rates.cache_write is None else rates.cache_write
    write_1h_rate = write_rate if rates.cache_write_1h is None else rates.cache_write_1h
    return (
        uncached * rates.input
        + usage.cache_read_tokens * read_rate
        + write_5m * write_rate
        + write_1h * write_1h_rate
        + usage.output_tokens * rates.output
    )


# Standard-tier keys of the LiteLLM layout; batch / priority / flex service tiers are not priced here.
_BASE = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
}
_TIER_KEY = re.compile(r"^(?P<base>[a-z_0-9]+?)_above_(?P<k>\d+)k_tokens$")


class PriceTable:
    """A price table in the standard (LiteLLM) JSON layout: model key -> per-token prices.

    Tables stack: `PriceTable.layered(user_table, shipped_table())` looks a key up in the user's file first.
    """

    def __init__(self, entries: dict[str, dict[str, Any]], source: str) -> None:
        self._layers: list[tuple[dict[str, dict[str, Any]], str]] = [
            ({k: v for k, v in entries.items() if k != "sample_spec" and isinstance(v, dict)}, source)
        ]
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Load a user's own price file (same layout as the shipped snapshot); errors name the file."""
        from orchestrator.errors import ConfigError, unreadable

        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8-sig"))  # -sig: an editor's BOM is no error
        except FileNotFoundError:
            raise ConfigError(f"price file {str(p)!r} does not exist") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigError(f"price file {str(p)!r} is not valid JSON: {unreadable(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"price file {str(p)!r} must be a JSON object of model key -> prices (the LiteLLM layout)"
            )
        for key, entry in data.items():
            bad = _bad_number(entry) if isinstance(entry, dict) and key != "sample_spec" else None
            if bad is not None:  # a NaN or negative rate would silently disable every budget check
                raise ConfigError(f"price file {str(p)!r}: {key[:80]!r}.{bad}")
        return cls(data, source=str(p))

    @classmethod
    def layered(cls, *tables: PriceTable) -> PriceTable:
        """One table that looks keys up in `tables` in order."""
        out = cls({}, source=" + ".join(t.source for t in tables))
        out._layers = [layer for t in tables for layer in t._layers]
        return out

    def _find(self, key: str) -> tuple[dict[str, Any], str] | None:
        for entries, source in self._layers:
            if key in entries:
                return entries[key], source
        return None

    def keys(self) -> list[str]:
        """All model keys in the table."""
        seen: dict[str, None] = {}
        for entries, _ in self._layers:
            seen.update(dict.fromkeys(entries))
        return list(seen)

    def entry(self, key: str) -> dict[str, Any]:
        """The raw entry for `key` (empty when absent)."""
        found = self._find(key)
        return found[0] if found else {}

    def lookup(self, key: str) -> Prices | None:
        """Prices for one table key, or None when the key is absent or carries no token prices."""
        found = self._find(key)
        if found is None:
            return None
        entry, source = found
        if _opt(entry.get(_BASE["input"])) is None or _opt(entry.get(_BASE["output"])) is None:
            return None
        base = {name: _opt(entry.get(k)) for name, k in _BASE.items()}
        return Prices(
            input=float(entry[_BASE["input"]]),
            output=float(entry[_BASE["output"]]),
            cache_read=base["cache_read"],
            cache_write=base["cache_write"],
            cache_write_1h=base["cache_write_1h"],
            tiers=_tiers(entry),
            source=f"{source}#{key}",
        )

    def context_window(self, key: str) -> int | None:
        """The model's input window, when the table knows it."""
        value = self.entry(key).get("max_input_tokens")
        return int(value) if isinstance(value, int | float) else None


def _tiers(entry: dict[str, Any]) -> tuple[Tier, ...]:
    by_size: dict[int, dict[str, float]] = {}
    reverse = {v: k for k, v in _BASE.items()}
    for key, value in entry.items():
        m = _TIER_KEY.match(key)
        rate = _opt(value)
        if m is None or rate is None or m["base"] not in reverse:
            continue
        by_size.setdefault(int(m["k"]) * 1000, {})[reverse[m["base"]]] = rate
    tiers = []
    for size, rates in sorted(by_size.items()):
        if "input" in rates and "output" in rates:
            tiers.append(
                Tier(
                    size,
                    rates["input"],
                    rates["output"],
                    rates.get("cache_read"),
                    rates.get("cache_write"),
                    rates.get("cache_write_1h"),
                )
            )
    return tuple(tiers)


def _opt(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bad_number(entry: dict[str, Any]) -> str | None:
    """What is wrong with an entry's first unusable rate (or context window, or tier size): a number that
    is negative, NaN, infinite or past a float. Values that are not numbers stay ignored, as in lookups."""
    rates = set(_BASE.values())
    for name, value in entry.items():
        tier = _TIER_KEY.match(name)
        if tier is not None and tier["base"] in rates and len(tier["k"]) > 12:
            return f"{name[:60]}...: a tier size of {len(tier['k'])} digits is past any context window"
        if name not in rates and name != "max_input_tokens" and (tier is None or tier["base"] not in rates):
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        try:
            usable = math.isfinite(float(value)) and value >= 0
        except OverflowError:
            usable = False
        if not usable:
            return f"{name} must be a finite number >= 0 (got {str(value)[:40]})"
    return None


@cache
def shipped_table() -> PriceTable:
    """The snapshot shipped with the package (LiteLLM layout, MIT; see data/LICENSE.prices)."""
    text = resources.files("orchestrator").joinpath("data/prices.json").read_text(encoding="utf-8")
    return PriceTable(json.loads(text), source="shipped snapshot")


def price_table(user_file: str | Path | None = None) -> PriceTable:
    """The shipped snapshot, with the user's own price file (if any) taking precedence key by key."""
    if user_file is None:
        return shipped_table()
    return PriceTable.layered(PriceTable.from_file(user_file), shipped_table())


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
