"""Queries over the trace store: run lists, span trees, and hotspots (where the money and time go)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from orchestrator.tracing.store import TraceStore

__all__ = ["Hotspot", "hotspots", "span_tree"]

By = Literal["node", "model", "tool"]


@dataclass(frozen=True)
class Hotspot:
    """One row of `orch traces top`."""

    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # exclusive: model calls made directly under this key
    unpriced_calls: int
    share: float | None  # of the total known cost
    p50_ms: float
    p95_ms: float
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def hotspots(store: TraceStore, by: By = "node", run_id: str | None = None) -> list[Hotspot]:
    """Group spans by node, model or tool; most expensive (then slowest) first."""
    run_filter, params = ("run_id = ?", [run_id]) if run_id else ("1=1", [])
    chats = store.spans(f"kind = 'chat' and {run_filter}", params)
    total = sum(c["cost_usd"] or 0.0 for c in chats)
    if by == "node":
        timed = store.spans(f"kind = 'node' and {run_filter}", params)
        key_of = "node"
    elif by == "model":
        timed, key_of = chats, "model"
    else:
        timed, key_of = store.spans(f"kind = 'tool' and {run_filter}", params), "tool"
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in timed:
        groups.setdefault(str(row[key_of]), []).append(row)
    out = []
    for key, rows in groups.items():
        direct = [c for c in chats if str(c[key_of]) == key] if by != "tool" else []
        known = [c["cost_usd"] for c in direct if c["cost_usd"] is not None]
        unpriced = sum(1 for c in direct if c["cost_usd"] is None)
        cost = sum(known) if known else (None if unpriced else (0.0 if by != "tool" else None))
        durations = [r["duration_ms"] for r in rows]
        out.append(
            Hotspot(
                key=key,
                calls=len(rows),
                input_tokens=sum(c["input_tokens"] or 0 for c in direct),
                output_tokens=sum(c["output_tokens"] or 0 for c in direct),
                cost_usd=cost,
                unpriced_calls=unpriced,
                share=(cost / total) if (cost is not None and total > 0) else None,
                p50_ms=_pct(durations, 0.5),
                p95_ms=_pct(durations, 0.95),
                errors=sum(1 for r in rows if r["status"] == "error"),
            )
        )
    out.sort(key=lambda h: (-(h.cost_usd or 0.0), -h.p95_ms, h.key))
    return out


def span_tree(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    """A run's spans as nested dicts (children in start order), one root per attempt (a resume adds one).

    An attempt whose process died never ended its run span; its spans are gathered under a stand-in root
    named "interrupted attempt" so they are still shown and counted.
    """
    rows = store.run_spans(run_id)
    by_id: dict[str, dict[str, Any]] = {r["span_id"]: {**r, "children": []} for r in rows}
    roots: list[dict[str, Any]] = []
    lost: dict[str, dict[str, Any]] = {}
    for r in rows:
        node = by_id[r["span_id"]]
        parent_id = r["parent_id"]
        if parent_id in by_id:
            by_id[parent_id]["children"].append(node)
        elif r["kind"] == "run" or parent_id is None:
            roots.append(node)
        else:  # the parent (the run span of a killed process) was never exported
            stand_in = lost.get(parent_id)
            if stand_in is None:
                stand_in = {
                    "span_id": parent_id,
                    "trace_id": r["trace_id"],
                    "parent_id": None,
                    "run_id": run_id,
                    "name": "interrupted attempt (the process ended before its run span closed)",
                    "kind": "run",
                    "node": None,
                    "model": None,
                    "tool": None,
                    "role": None,
                    "action": None,
                    "start_ns": r["start_ns"],
                    "end_ns": r["end_ns"],
                    "duration_ms": None,
                    "status": "error",
                    "status_message": "interrupted",
                    "input_tokens": None,
                    "output_tokens": None,
                    "cache_read_tokens": None,
                    "cache_write_tokens": None,
                    "cost_usd": None,
                    "ttft_ms": None,
                    "attributes": "{}",
                    "children": [],
                }
                lost[parent_id] = stand_in
                roots.append(stand_in)
            stand_in["children"].append(node)
            stand_in["end_ns"] = max(stand_in["end_ns"] or 0, r["end_ns"] or 0)
    for stand_in in lost.values():
        stand_in["duration_ms"] = (stand_in["end_ns"] - stand_in["start_ns"]) / 1e6
    roots.sort(key=lambda n: n["start_ns"] or 0)
    return roots
