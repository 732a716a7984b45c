"""Two runs side by side, node by node: cost, tokens, time, executions and models (`orch traces compare`).

A node is the `node` column of the spans: its executions are its node spans (their durations summed are its
wall time), and its model calls are the `chat` spans that ran in it. A node that ran several times is
compared as its total, with its count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.evals.whatif import stored_cost
from orchestrator.tracing.store import TraceStore

__all__ = ["Comparison", "NodeDiff", "Side", "compare"]


@dataclass(frozen=True)
class Side:
    """One run's totals for a node (or for the whole run).

    `cost_usd` sums the known costs of its model calls (None when none is known); `unpriced_calls` counts
    those stored with cost null, so the sum is a lower bound when it is not 0.
    """

    count: int  # executions: node spans (for the run: node executions in all)
    wall_ms: float  # their durations summed (for the run: its attempts' run spans)
    calls: int  # model calls
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    unpriced_calls: int
    models: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "count": self.count,
            "wall_ms": self.wall_ms,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "models": list(self.models),
        }


@dataclass(frozen=True)
class NodeDiff:
    """A node in run A and in run B (None where it did not run), and B minus A."""

    node: str | None
    a: Side | None
    b: Side | None

    @property
    def only_in(self) -> str | None:
        """ "a" or "b" for a node that ran in one run only."""
        return "a" if self.b is None else "b" if self.a is None else None

    def delta(self) -> dict[str, Any] | None:
        """B minus A: cost (None unless both are fully known), tokens, wall time, executions, calls."""
        a, b = self.a, self.b
        if a is None or b is None:
            return None
        known = not a.unpriced_calls and not b.unpriced_calls
        cost = (b.cost_usd or 0.0) - (a.cost_usd or 0.0) if known else None
        return {
            "cost_usd": cost,
            "cost_ratio": (b.cost_usd or 0.0) / a.cost_usd if known and a.cost_usd else None,
            "input_tokens": b.input_tokens - a.input_tokens,
            "output_tokens": b.output_tokens - a.output_tokens,
            "wall_ms": b.wall_ms - a.wall_ms,
            "count": b.count - a.count,
            "calls": b.calls - a.calls,
            "models_changed": a.models != b.models,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "node": self.node,
            "a": self.a.to_dict() if self.a else None,
            "b": self.b.to_dict() if self.b else None,
            "delta": self.delta(),
            "only_in": self.only_in,
        }


@dataclass(frozen=True)
class Comparison:
    """Run A against run B: each node (in the order it first ran, A's nodes first) and the run totals.

    Example:
        >>> c = compare(store, "3f2a", "9b1c")  # doctest: +SKIP
        >>> [(n.node, n.delta()["cost_usd"]) for n in c.nodes]  # doctest: +SKIP
        [('controller', -0.0012), ('worker', 0.0003), ('call_tool', 0.0)]
    """

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    nodes: tuple[NodeDiff, ...]
    total: NodeDiff

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`orch traces compare --json`)."""
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "nodes": [n.to_dict() for n in self.nodes],
            "total": self.total.to_dict(),
        }


_RUN_FIELDS = ("run_id", "graph", "status", "started_at", "duration_ms", "cost_usd", "unpriced_calls")


def compare(store: TraceStore, run_a: str, run_b: str) -> Comparison:
    """Compare two runs (full ids or unique prefixes) node by node; a `ConfigError` for an unknown run."""
    rows = []
    for run in (run_a, run_b):
        found = store.get_run(run)
        if found is None:
            raise ConfigError(f"no run {run!r} in {store.path}; see `orch traces list`")
        rows.append(found)
    sides = [_sides(store, row) for row in rows]
    order = list(dict.fromkeys([*sides[0][0], *sides[1][0]]))
    nodes = tuple(NodeDiff(node, sides[0][0].get(node), sides[1][0].get(node)) for node in order)
    return Comparison(
        run_a={k: rows[0].get(k) for k in _RUN_FIELDS},
        run_b={k: rows[1].get(k) for k in _RUN_FIELDS},
        nodes=nodes,
        total=NodeDiff(None, sides[0][1], sides[1][1]),
    )


def _sides(store: TraceStore, run: dict[str, Any]) -> tuple[dict[str | None, Side], Side]:
    """A run's totals per node (in the order each first ran) and for the whole run."""
    spans = [s for s in store.run_spans(run["run_id"]) if s["kind"] in ("run", "node", "chat")]
    by_node: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        if s["kind"] != "run":
            by_node.setdefault(s["node"], []).append(s)
    per_node = {node: _side(group) for node, group in by_node.items()}
    total = _side([s for s in spans if s["kind"] != "run"])
    attempts = [s["duration_ms"] or 0.0 for s in spans if s["kind"] == "run"]
    wall = sum(attempts) if attempts else float(run.get("duration_ms") or 0.0)  # no run span: killed
    return per_node, Side(
        total.count,
        wall,
        total.calls,
        total.input_tokens,
        total.output_tokens,
        total.cost_usd,
        total.unpriced_calls,
        total.models,
    )


def _side(spans: list[dict[str, Any]]) -> Side:
    executions = [s for s in spans if s["kind"] == "node"]
    chats = [s for s in spans if s["kind"] == "chat"]
    costs = [stored_cost(c) for c in chats]
    unpriced = sum(1 for c in costs if c is None)
    known = [c for c in costs if c is not None]
    cost = sum(known) if known or not unpriced else None
    return Side(
        count=len(executions),
        wall_ms=sum(s["duration_ms"] or 0.0 for s in executions),
        calls=len(chats),
        input_tokens=sum(c["input_tokens"] or 0 for c in chats),
        output_tokens=sum(c["output_tokens"] or 0 for c in chats),
        cost_usd=cost,
        unpriced_calls=unpriced,
        models=tuple(dict.fromkeys(str(c["model"]) for c in chats if c["model"])),
    )
