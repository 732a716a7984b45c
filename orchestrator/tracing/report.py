"""Queries over the trace store: run lists, span trees, and hotspots (where the money and time go)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from orchestrator.tracing import rollups
from orchestrator.tracing.store import TraceStore

__all__ = ["EXACT_SPANS", "Hotspot", "Scope", "hotspots", "measure_of", "span_tree"]

By = Literal["node", "model", "tool", "slot"]
EXACT_SPANS = 50_000  # up to this many spans in scope, percentiles are computed from every span
_SPAN_COLUMNS = (
    "run_id, kind, node, node_path, model, slot, tool, start_ns, duration_ms, status, input_tokens, "
    "output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, compute_ms, ttft_ms, tokens_per_s, "
    "repairs, escalations"
)


@dataclass(frozen=True)
class Scope:
    """Which runs a report covers: given runs (one, or the last N), runs of one graph, spans since a time;
    all of them by default. The conditions combine."""

    run_ids: tuple[str, ...] | None = None
    graph: str | None = None
    since: float | None = None  # epoch seconds

    def describe(self) -> str:
        parts = []
        if self.run_ids is not None:
            parts.append(f"run {self.run_ids[0]}" if len(self.run_ids) == 1 else f"{len(self.run_ids)} runs")
        if self.graph:
            parts.append(f"graph {self.graph}")
        if self.since is not None:
            parts.append("since " + time.strftime("%Y-%m-%d %H:%M", time.localtime(self.since)))
        return ", ".join(parts) or "all runs"


@dataclass(frozen=True)
class Hotspot:
    """One row of `orch traces top`: a node, model, slot or tool over the scope.

    `calls`: executions (a node's, a tool's) or model calls (a model's, a slot's). Cost and compute time
    are exclusive (the model calls made directly in it) and inclusive (`*_incl`: with nodes nested in it,
    a subgraph's). `share` is of the total cost, `compute_share` of the total compute time (local models:
    every cost is 0, and compute time is what they spend); either is None where nothing was spent.
    Percentiles are exact up to `EXACT_SPANS` spans in scope, else read from the ingest histograms (within
    about 5%).
    """

    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    unpriced_calls: int
    share: float | None
    p50_ms: float
    p95_ms: float
    errors: int
    model_calls: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_hit: float | None = None  # cached share of the input tokens
    cost_incl: float | None = None
    compute_ms: float = 0.0
    compute_incl: float = 0.0
    compute_share: float | None = None
    time_ms: float = 0.0  # total time (a node's span covers what it runs)
    time_excl_ms: float = 0.0  # less the time spent in nodes nested in it
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    tokens_per_s_p50: float | None = None
    repairs: int = 0
    escalations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure_of(spots: Sequence[Hotspot]) -> str:
    """What the shares are of: "cost", "compute" (local runs: no cost), "cost+compute" (a mix), or "none"."""
    cost = any((h.cost_usd or 0) > 0 for h in spots)
    compute = any(h.compute_ms > 0 for h in spots)
    return {(True, True): "cost+compute", (True, False): "cost", (False, True): "compute"}.get(
        (cost, compute), "none"
    )


def hotspots(
    store: TraceStore,
    by: By = "node",
    run_id: str | None = None,
    *,
    scope: Scope | None = None,
) -> list[Hotspot]:
    """Group the scope's spans by node, model, slot or tool; most expensive (cost, then compute time, then
    the slowest) first. `run_id` is a scope of one run."""
    scope = scope or Scope(run_ids=(run_id,) if run_id else None)
    sums, hist, exact = _gather(store, scope, by)
    rows = [(key, dict(zip(rollups.SUMS, v, strict=True))) for key, v in sums.items()]
    rows = [(k, r) for k, r in rows if r["spans"] or r["model_calls"] or r["cost_incl"] or r["compute_incl"]]
    total_cost = sum(r["cost_usd"] for _, r in rows)
    total_compute = sum(r["compute_ms"] for _, r in rows)
    out = []
    for key, r in rows:
        priced, unpriced = int(r["priced_calls"]), int(r["unpriced_calls"])
        if by == "tool":
            cost: float | None = None
        else:
            cost = r["cost_usd"] if priced or not unpriced else None

        def pct(measure: str, q: float, key: str = key) -> float | None:
            if exact is not None:
                values = exact.get((key, measure)) or []
                return _pct(values, q) if values else None
            return rollups.percentile(hist.get((key, measure), []), q)

        calls = int(r["spans"]) if by != "node" or r["spans"] else int(r["model_calls"])
        inputs = int(r["input_tokens"])
        out.append(
            Hotspot(
                key=key,
                calls=calls,
                input_tokens=inputs,
                output_tokens=int(r["output_tokens"]),
                cost_usd=cost,
                unpriced_calls=unpriced,
                share=(cost / total_cost) if (cost is not None and total_cost > 0) else None,
                p50_ms=pct("duration", 0.5) or 0.0,
                p95_ms=pct("duration", 0.95) or 0.0,
                errors=int(r["errors"]),
                model_calls=int(r["model_calls"]),
                cache_read_tokens=int(r["cache_read_tokens"]),
                cache_write_tokens=int(r["cache_write_tokens"]),
                cache_hit=(r["cache_read_tokens"] / inputs) if inputs else None,
                cost_incl=(r["cost_incl"] if cost is not None else None) if by != "tool" else None,
                compute_ms=r["compute_ms"],
                compute_incl=r["compute_incl"],
                compute_share=(r["compute_ms"] / total_compute) if total_compute > 0 else None,
                time_ms=r["duration_ms"],
                time_excl_ms=max(r["duration_ms"] - r["nested_ms"], 0.0),
                ttft_p50_ms=pct("ttft", 0.5) if by == "model" else None,
                ttft_p95_ms=pct("ttft", 0.95) if by == "model" else None,
                tokens_per_s_p50=pct("tps", 0.5) if by == "model" else None,
                repairs=int(r["repairs"]),
                escalations=int(r["escalations"]),
            )
        )
    out.sort(key=lambda h: (-(h.cost_usd or 0.0), -h.compute_ms, -h.p95_ms, h.key))
    return out


Sums = dict[str, list[float]]
Hist = dict[tuple[str, str], list[tuple[int, int]]]
Exact = dict[tuple[str, str], list[float]]


def _gather(store: TraceStore, scope: Scope, by: str) -> tuple[Sums, Hist, Exact | None]:
    """The scope's roll-up sums per key, with histograms or, for small scopes, every value (exact)."""
    cut_day = int(scope.since * 1e9 // rollups.DAY_NS) if scope.since is not None else None
    if scope.run_ids is None and not _small(store, scope):
        # whole days from the roll-ups; the first day of a --since window from its spans
        where: list[str] = ["dim = ?"]
        params: list[Any] = [by]
        if scope.graph is not None:
            where.append("graph = ?")
            params.append(scope.graph)
        if cut_day is not None:
            where.append("day > ?")
            params.append(cut_day)
        cond = " and ".join(where)
        picked = ", ".join(f"sum({n})" for n in rollups.SUMS)
        sums: Sums = {
            str(r[0]): list(r[1:])
            for r in store.rows(f"select key, {picked} from rollups where {cond} group by key", params)
        }
        hist: Hist = {}
        for key, measure, b, n in store.rows(
            f"select key, measure, bucket, sum(n) from rollup_hist where {cond} "
            "group by key, measure, bucket",
            params,
        ):
            hist.setdefault((str(key), str(measure)), []).append((int(b), int(n)))
        if cut_day is not None and scope.since is not None:
            end = (cut_day + 1) * rollups.DAY_NS
            first = _span_rows(store, scope, int(scope.since * 1e9), end)
            _add_spans(sums, store, first, by)
            for (key, measure), values in _values(first, by).items():
                hist.setdefault((key, measure), []).extend((rollups.bucket(v), 1) for v in values)
        return sums, hist, None
    rows = _span_rows(store, scope, int(scope.since * 1e9) if scope.since is not None else None, None)
    sums = {}
    _add_spans(sums, store, rows, by)
    return sums, {}, _values(rows, by)


def _add_spans(sums: Sums, store: TraceStore, rows: list[dict[str, Any]], by: str) -> None:
    """Add span rows' roll-up sums for dim `by` into `sums` (the same summing as at ingest)."""
    summed, _ = rollups.summarize(rows, store.graphs_of_runs({r["run_id"] for r in rows}))
    for (_, _, dim, key), values in summed.items():
        if dim == by:
            have = sums.setdefault(key, [0.0] * len(rollups.SUMS))
            sums[key] = [a + b for a, b in zip(have, values, strict=True)]


def _small(store: TraceStore, scope: Scope) -> bool:
    """Whether the scope holds few enough spans to read them all (exact percentiles)."""
    if scope.since is None and scope.graph is None:
        ((n,),) = store.rows("select count(*) from (select 1 from spans limit ?) as s", [EXACT_SPANS + 1])
        return int(n) <= EXACT_SPANS
    return False


def _span_rows(
    store: TraceStore, scope: Scope, since_ns: int | None, until_ns: int | None
) -> list[dict[str, Any]]:
    where: list[str] = ["kind in ('node', 'chat', 'tool')"]
    params: list[Any] = []
    if scope.run_ids is not None:
        where.append(f"run_id in ({','.join('?' * len(scope.run_ids))})")
        params.extend(scope.run_ids)
    if scope.graph is not None:
        where.append("run_id in (select run_id from runs where graph = ?)")
        params.append(scope.graph)
    if since_ns is not None:
        where.append("start_ns >= ?")
        params.append(since_ns)
    if until_ns is not None:
        where.append("start_ns < ?")
        params.append(until_ns)
    return store.query(f"select {_SPAN_COLUMNS} from spans where {' and '.join(where)}", params)


def _values(rows: Iterable[dict[str, Any]], by: str) -> Exact:
    """Every duration (and, by model, TTFT and tokens/s) per key, as the roll-ups' histograms count them."""
    out: Exact = {}
    for r in rows:
        kind = r["kind"]
        if by == "node" and kind == "node" and r["node"] is not None:
            key = str(r["node"])
        elif by == "tool" and kind == "tool" and r["tool"] is not None:
            key = str(r["tool"])
        elif by in ("model", "slot") and kind == "chat":
            key = str(r["model"] or "?") if by == "model" else str(r["slot"] or "-")
        else:
            continue
        out.setdefault((key, "duration"), []).append(float(r["duration_ms"] or 0.0))
        if by == "model":
            for measure, column in (("ttft", "ttft_ms"), ("tps", "tokens_per_s")):
                if r[column] is not None:
                    out.setdefault((key, measure), []).append(float(r[column]))
    return out


def span_tree(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    """A run's spans as nested dicts (children in start order), one root per attempt (a resume adds one).

    An attempt whose process died never ended its run span, nor the spans open around the one it was in;
    its spans whose parent was never stored are gathered under one stand-in root per attempt (its trace),
    named "interrupted attempt", so they are still shown and counted.
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
        else:  # the parent (the run span of a killed process, or a node open in it) was never exported
            stand_in = lost.get(r["trace_id"])
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
                lost[r["trace_id"]] = stand_in
                roots.append(stand_in)
            stand_in["children"].append(node)
            stand_in["end_ns"] = max(stand_in["end_ns"] or 0, r["end_ns"] or 0)
    for stand_in in lost.values():
        stand_in["duration_ms"] = (stand_in["end_ns"] - stand_in["start_ns"]) / 1e6
    roots.sort(key=lambda n: n["start_ns"] or 0)
    return roots
