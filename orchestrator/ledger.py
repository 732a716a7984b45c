"""The cost ledger: one entry per model or tool call, checkpointed in the graph state.

The checkpointed ledger is the authoritative cost record: a resumed run starts from it, so a finished node is
never paid twice. `Budget` is checked before every model call against a worst-case estimate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

__all__ = ["Budget", "Ledger", "LedgerEntry", "NodeCost"]

Kind = Literal["model", "tool"]


class LedgerEntry(TypedDict):
    """One model or tool call, as stored in the checkpointed state."""

    node: str
    kind: Kind
    name: str  # model name or tool name
    role: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    wall_ms: float
    ttft_ms: float | None
    compute_ms: float | None


@dataclass(frozen=True)
class Budget:
    """Per-run limits; `None` means unlimited. A stop returns `status="budget_stop"`, it never raises.

    Example:
        >>> Budget(usd=0.05, tokens=20_000, seconds=60, steps=8).usd
        0.05
    """

    usd: float | None = None
    tokens: int | None = None
    seconds: float | None = None
    steps: int | None = None


@dataclass(frozen=True)
class NodeCost:
    """The per-node line of a run's cost table."""

    node: str
    model: str | None
    role: str | None
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    unpriced_calls: int
    wall_ms: float
    ttft_ms: float | None


@dataclass(frozen=True)
class Ledger:
    """A run's ledger: totals and the per-node breakdown."""

    run_id: str
    entries: tuple[LedgerEntry, ...]

    @property
    def input_tokens(self) -> int:
        return sum(e["input_tokens"] for e in self.entries)

    @property
    def output_tokens(self) -> int:
        return sum(e["output_tokens"] for e in self.entries)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float | None:
        """Sum of known costs; None if no call had a known price."""
        known = [e["cost_usd"] for e in self.entries if e["cost_usd"] is not None]
        return sum(known) if known else (None if self.unpriced_calls else 0.0)

    @property
    def unpriced_calls(self) -> int:
        """Model calls whose cost is unknown: the total is then a lower bound."""
        return sum(1 for e in self.entries if e["kind"] == "model" and e["cost_usd"] is None)

    def by_node(self) -> list[NodeCost]:
        """Aggregate per node (in first-seen order)."""
        groups: dict[str, list[LedgerEntry]] = {}
        for e in self.entries:
            groups.setdefault(e["node"], []).append(e)
        rows = []
        for node, es in groups.items():
            models = [e for e in es if e["kind"] == "model"]
            names = sorted({e["name"] for e in models})
            known = [e["cost_usd"] for e in es if e["cost_usd"] is not None]
            ttfts = [e["ttft_ms"] for e in models if e["ttft_ms"] is not None]
            rows.append(
                NodeCost(
                    node=node,
                    model=", ".join(names) if names else None,
                    role=next((e["role"] for e in models if e["role"]), None),
                    calls=len(models) if models else len(es),
                    input_tokens=sum(e["input_tokens"] for e in es),
                    output_tokens=sum(e["output_tokens"] for e in es),
                    cost_usd=sum(known)
                    if known
                    else (None if any(e["kind"] == "model" for e in es) else 0.0),
                    unpriced_calls=sum(1 for e in models if e["cost_usd"] is None),
                    wall_ms=sum(e["wall_ms"] for e in es),
                    ttft_ms=(sum(ttfts) / len(ttfts)) if ttfts else None,
                )
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `--json` output and the trace store)."""
        return {
            "run_id": self.run_id,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "nodes": [n.__dict__ for n in self.by_node()],
        }


class BudgetMeter:
    """Live spend of one run in this process: checkpointed totals plus calls made since (re)start."""

    def __init__(self, budget: Budget, spent_usd: float = 0.0, spent_tokens: int = 0) -> None:
        self.budget = budget
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        self.started = time.monotonic()

    def add(self, entry: LedgerEntry) -> None:
        """Count a finished call."""
        self.spent_usd += entry["cost_usd"] or 0.0
        self.spent_tokens += entry["input_tokens"] + entry["output_tokens"]

    def refusal(self, est_tokens: int, est_usd: float | None) -> str | None:
        """Why a call with this worst case would break the budget, or None if it fits."""
        b = self.budget
        if b.seconds is not None and time.monotonic() - self.started >= b.seconds:
            return f"time budget of {b.seconds:g}s used up"
        if b.tokens is not None and self.spent_tokens + est_tokens > b.tokens:
            return f"token budget: {self.spent_tokens} spent + {est_tokens} worst case > {b.tokens}"
        if b.usd is not None and est_usd is not None and self.spent_usd + est_usd > b.usd:
            return f"cost budget: ${self.spent_usd:.6f} spent + ${est_usd:.6f} worst case > ${b.usd:g}"
        return None
